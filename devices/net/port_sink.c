/* SPDX-License-Identifier: MIT */
/*
 * uvhost: the sink port. Frames from the guest are counted and dropped
 * (the device's TX burst does that when a port has no tx_burst); the
 * guest's RX rings only ever get a RARP.
 */
#include "net_internal.h"

const struct net_port_ops net_port_sink = {
	.name = "sink",
	.rx_passive = true,
};
