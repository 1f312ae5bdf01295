/* SPDX-License-Identifier: MIT */
/*
 * Wire-format tables: every request id has a name and a rule, unknown ids
 * are refused, the size rules accept exactly the sizes senders use, and the
 * fd rules follow the payload and the negotiated features.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "log.h"
#include "message.h"
#include "t_helpers.h"

static struct uvh_msg msg;	/* big: keep off the stack */

/* A rule row must be self-consistent whatever the request. */
static void check_row(const struct uvh_request_info *info, uint32_t id)
{
	cr_assert_not_null(info, "id %u", id);
	cr_assert_not_null(info->name, "id %u has no name", id);
	cr_assert_gt(strlen(info->name), 0);
	cr_assert_leq(info->size_rule, UVH_SIZE_MEM_TABLE, "%s", info->name);
	cr_assert_leq(info->fd_rule, UVH_FDS_LOG, "%s", info->name);
	cr_assert_leq(info->reply_rule, UVH_REPLY_LOG, "%s", info->name);
	cr_assert_leq(info->size_min, info->size_max, "%s", info->name);
	cr_assert_leq(info->size_max, UVH_MSG_MAX_PAYLOAD, "%s", info->name);
	cr_assert_leq(info->reply_size_min, info->reply_size_max, "%s", info->name);
	cr_assert_leq(info->reply_size_max, UVH_MSG_MAX_PAYLOAD, "%s", info->name);
	if (info->size_rule == UVH_SIZE_EXACT)
		cr_assert_eq(info->size_min, info->size_max, "%s", info->name);
	if (info->reply_rule == UVH_REPLY_BODY)
		cr_assert_gt(info->reply_size_max, 0, "%s", info->name);
	cr_assert(info->gate_protocol >= -1 &&
		  info->gate_protocol < UVH_PROTOCOL_F_COUNT, "%s", info->name);
	cr_assert(info->gate_feature >= -1 && info->gate_feature < 64,
		  "%s", info->name);
}

Test(message, frontend_table_complete)
{
	for (uint32_t id = 1; id <= 45; id++) {
		const struct uvh_request_info *info = uvh_frontend_request_info(id);

		check_row(info, id);
		cr_assert_str_eq(uvh_frontend_request_name(id), info->name);
		/* Names are distinct. */
		for (uint32_t j = 1; j < id; j++)
			cr_assert_str_neq(uvh_frontend_request_name(j), info->name);
	}
	cr_assert_eq(UVH_REQ_MAX, 46);
	cr_assert_str_eq(uvh_frontend_request_name(1), "GET_FEATURES");
	cr_assert_str_eq(uvh_frontend_request_name(5), "SET_MEM_TABLE");
	cr_assert_str_eq(uvh_frontend_request_name(12), "SET_VRING_KICK");
	cr_assert_str_eq(uvh_frontend_request_name(21), "SET_BACKEND_REQ_FD");
	cr_assert_str_eq(uvh_frontend_request_name(38), "REM_MEM_REG");
	cr_assert_str_eq(uvh_frontend_request_name(45), "GET_VRING_BASE_SKIP_DRAIN");
}

Test(message, backend_table_complete)
{
	for (uint32_t id = 1; id <= 10; id++) {
		const struct uvh_request_info *info = uvh_backend_request_info(id);

		check_row(info, id);
		cr_assert_str_eq(uvh_backend_request_name(id), info->name);
		for (uint32_t j = 1; j < id; j++)
			cr_assert_str_neq(uvh_backend_request_name(j), info->name);
	}
	cr_assert_eq(UVH_BACKEND_REQ_MAX, 11);
	cr_assert_str_eq(uvh_backend_request_name(1), "IOTLB_MSG");
	cr_assert_str_eq(uvh_backend_request_name(3), "VRING_HOST_NOTIFIER_MSG");
	cr_assert_str_eq(uvh_backend_request_name(10), "SHMEM_UNMAP");
}

Test(message, unknown_ids)
{
	const uint32_t fe[] = { 0, 46, 47, 1000, 0xffffffffu };
	const uint32_t be[] = { 0, 11, 12, 0x80000000u, 0xffffffffu };

	for (size_t i = 0; i < sizeof(fe) / sizeof(fe[0]); i++) {
		cr_assert_null(uvh_frontend_request_info(fe[i]), "%u", fe[i]);
		cr_assert_str_eq(uvh_frontend_request_name(fe[i]), "UNKNOWN");
	}
	for (size_t i = 0; i < sizeof(be) / sizeof(be[0]); i++) {
		cr_assert_null(uvh_backend_request_info(be[i]), "%u", be[i]);
		cr_assert_str_eq(uvh_backend_request_name(be[i]), "UNKNOWN");
	}
}

Test(message, protocol_feature_names)
{
	cr_assert_eq(UVH_PROTOCOL_F_COUNT, 24);
	for (unsigned int bit = 0; bit < 24; bit++) {
		const char *name = uvh_protocol_feature_name(bit);

		cr_assert_not_null(name, "bit %u", bit);
		cr_assert_gt(strlen(name), 0);
		for (unsigned int j = 0; j < bit; j++)
			cr_assert_str_neq(uvh_protocol_feature_name(j), name);
	}
	cr_assert_str_eq(uvh_protocol_feature_name(0), "MQ");
	cr_assert_str_eq(uvh_protocol_feature_name(1), "LOG_SHMFD");
	cr_assert_str_eq(uvh_protocol_feature_name(3), "REPLY_ACK");
	cr_assert_str_eq(uvh_protocol_feature_name(15), "CONFIGURE_MEM_SLOTS");
	cr_assert_str_eq(uvh_protocol_feature_name(23), "GET_VRING_BASE_SKIP_DRAIN");
	cr_assert_null(uvh_protocol_feature_name(24));
	cr_assert_null(uvh_protocol_feature_name(64));
	cr_assert_null(uvh_protocol_feature_name(~0u));
}

/* Spot checks of rules other modules depend on. */
Test(message, rules_of_key_requests)
{
	const struct uvh_request_info *i;

	i = uvh_frontend_request_info(UVH_REQ_SET_VRING_KICK);
	cr_assert_eq(i->fd_rule, UVH_FDS_VRING);
	cr_assert_eq(i->size_rule, UVH_SIZE_EXACT);
	cr_assert_eq(i->size_min, 8);
	i = uvh_frontend_request_info(UVH_REQ_SET_MEM_TABLE);
	cr_assert_eq(i->fd_rule, UVH_FDS_REGIONS);
	cr_assert_eq(i->size_rule, UVH_SIZE_MEM_TABLE);
	i = uvh_frontend_request_info(UVH_REQ_GET_FEATURES);
	cr_assert_eq(i->reply_rule, UVH_REPLY_BODY);
	cr_assert_eq(i->gate_protocol, -1);
	i = uvh_frontend_request_info(UVH_REQ_SET_LOG_BASE);
	cr_assert_eq(i->reply_rule, UVH_REPLY_LOG);
	cr_assert_eq(i->fd_rule, UVH_FDS_LOG);
	i = uvh_frontend_request_info(UVH_REQ_SET_BACKEND_REQ_FD);
	cr_assert_eq(i->gate_protocol, UVH_PROTOCOL_F_BACKEND_REQ);
	i = uvh_frontend_request_info(UVH_REQ_IOTLB_MSG);
	cr_assert_eq(i->gate_feature, UVH_VIRTIO_F_IOMMU_PLATFORM);
	i = uvh_frontend_request_info(UVH_REQ_SET_VRING_ENABLE);
	cr_assert_eq(i->gate_feature, UVH_F_PROTOCOL_FEATURES);
}

/* ---- sizes ------------------------------------------------------------------ */

static int fe_size(uint32_t req, uint32_t size, bool reply)
{
	msg.hdr.request = req;
	msg.hdr.size = size;
	return uvh_msg_check_size(uvh_frontend_request_info(req), &msg, reply);
}

static int be_size(uint32_t req, uint32_t size, bool reply)
{
	msg.hdr.request = req;
	msg.hdr.size = size;
	return uvh_msg_check_size(uvh_backend_request_info(req), &msg, reply);
}

static int mem_table(uint32_t nregions, uint32_t size)
{
	memset(&msg, 0, sizeof(msg));
	msg.payload.mem_table.nregions = nregions;
	return fe_size(UVH_REQ_SET_MEM_TABLE, size, false);
}

Test(message, size_mem_table)
{
	t_log_capture();
	cr_assert_eq(mem_table(0, 8), 0);
	cr_assert_eq(mem_table(1, 8 + 32), 0);
	cr_assert_eq(mem_table(8, 8 + 8 * 32), 0);
	/* The full 8-slot struct with fewer regions is tolerated. */
	cr_assert_eq(mem_table(2, sizeof(struct uvh_mem_table)), 0);
	cr_assert(!t_log_contains("SET_MEM_TABLE"));

	cr_assert_eq(mem_table(9, 8 + 9 * 32), -EMSGSIZE);
	cr_assert_eq(mem_table(9, sizeof(struct uvh_mem_table)), -EMSGSIZE);
	cr_assert_eq(mem_table(1, 8), -EMSGSIZE);	/* region missing */
	cr_assert_eq(mem_table(8, 8 + 7 * 32), -EMSGSIZE);
	cr_assert_eq(mem_table(0, 4), -EMSGSIZE);
	cr_assert_eq(mem_table(0xffffffffu, 264), -EMSGSIZE);
	cr_assert_eq(mem_table(1, 8 + 9 * 32), -EMSGSIZE);
	cr_assert(t_log_contains("SET_MEM_TABLE: payload size"));
	uvh_log_set_sink(NULL, NULL);
}

static int config(uint32_t req, uint32_t head_size, uint32_t size, bool reply)
{
	memset(&msg, 0, sizeof(msg));
	msg.payload.config.size = head_size;
	return fe_size(req, size, reply);
}

Test(message, size_config)
{
	cr_assert_eq(config(UVH_REQ_GET_CONFIG, 4, 16, false), 0);
	cr_assert_eq(config(UVH_REQ_GET_CONFIG, 0, 12, false), 0);
	cr_assert_eq(config(UVH_REQ_GET_CONFIG, 256, 12 + 256, false), 0);
	cr_assert_eq(config(UVH_REQ_GET_CONFIG, 4, 16, true), 0);
	cr_assert_eq(config(UVH_REQ_SET_CONFIG, 8, 20, false), 0);

	/* The head's size must match the bytes actually sent. */
	cr_assert_eq(config(UVH_REQ_GET_CONFIG, 8, 16, false), -EMSGSIZE);
	cr_assert_eq(config(UVH_REQ_GET_CONFIG, 4, 20, false), -EMSGSIZE);
	cr_assert_eq(config(UVH_REQ_GET_CONFIG, 8, 16, true), -EMSGSIZE);
	cr_assert_eq(config(UVH_REQ_SET_CONFIG, 0xfffffff4u, 0, false), -EMSGSIZE);
	cr_assert_eq(config(UVH_REQ_GET_CONFIG, 257, 12 + 257, false), -EMSGSIZE);
	cr_assert_eq(config(UVH_REQ_GET_CONFIG, 0, 11, false), -EMSGSIZE);
}

Test(message, size_iotlb)
{
	memset(&msg, 0, sizeof(msg));
	cr_assert_eq(fe_size(UVH_REQ_IOTLB_MSG, 26, false), 0);
	cr_assert_eq(fe_size(UVH_REQ_IOTLB_MSG, 32, false), 0);
	cr_assert_eq(fe_size(UVH_REQ_IOTLB_MSG, 25, false), -EMSGSIZE);
	cr_assert_eq(fe_size(UVH_REQ_IOTLB_MSG, 33, false), -EMSGSIZE);
	cr_assert_eq(fe_size(UVH_REQ_IOTLB_MSG, 0, false), -EMSGSIZE);
	cr_assert_eq(be_size(UVH_BACKEND_REQ_IOTLB_MSG, 26, false), 0);
	cr_assert_eq(be_size(UVH_BACKEND_REQ_IOTLB_MSG, 32, false), 0);
	cr_assert_eq(be_size(UVH_BACKEND_REQ_IOTLB_MSG, 25, false), -EMSGSIZE);
}

Test(message, size_exact_and_range)
{
	memset(&msg, 0, sizeof(msg));
	t_log_capture();
	cr_assert_eq(fe_size(UVH_REQ_SET_VRING_KICK, 8, false), 0);
	cr_assert_eq(fe_size(UVH_REQ_SET_VRING_KICK, 0, false), -EMSGSIZE);
	cr_assert_eq(fe_size(UVH_REQ_SET_VRING_KICK, 16, false), -EMSGSIZE);
	cr_assert(t_log_contains("SET_VRING_KICK: payload size 16 is invalid"));
	cr_assert_eq(fe_size(UVH_REQ_GET_FEATURES, 0, false), 0);
	cr_assert_eq(fe_size(UVH_REQ_GET_FEATURES, 8, false), -EMSGSIZE);
	cr_assert_eq(fe_size(UVH_REQ_SET_VRING_ADDR, 40, false), 0);
	cr_assert_eq(fe_size(UVH_REQ_SET_VRING_ADDR, 32, false), -EMSGSIZE);
	cr_assert_eq(fe_size(UVH_REQ_GET_INFLIGHT_FD, 20, false), 0);
	cr_assert_eq(fe_size(UVH_REQ_GET_INFLIGHT_FD, 24, false), 0);
	cr_assert_eq(fe_size(UVH_REQ_GET_INFLIGHT_FD, 19, false), -EMSGSIZE);
	cr_assert_eq(fe_size(UVH_REQ_CREATE_CRYPTO_SESSION, UVH_MSG_MAX_PAYLOAD, false), 0);
	cr_assert_eq(fe_size(UVH_REQ_CREATE_CRYPTO_SESSION, UVH_MSG_MAX_PAYLOAD + 1, false),
		     -EMSGSIZE);
	cr_assert_eq(be_size(UVH_BACKEND_REQ_SHMEM_MAP, 40, false), 0);
	cr_assert_eq(be_size(UVH_BACKEND_REQ_SHMEM_MAP, 39, false), -EMSGSIZE);
	uvh_log_set_sink(NULL, NULL);
}

Test(message, size_replies)
{
	memset(&msg, 0, sizeof(msg));
	t_log_capture();
	/* A body reply follows the reply rule. */
	cr_assert_eq(fe_size(UVH_REQ_GET_FEATURES, 8, true), 0);
	cr_assert_eq(fe_size(UVH_REQ_GET_FEATURES, 0, true), -EMSGSIZE);
	cr_assert(t_log_contains("GET_FEATURES reply: payload size 0"));
	cr_assert_eq(fe_size(UVH_REQ_GET_SHMEM_CONFIG, 2056, true), 0);
	cr_assert_eq(fe_size(UVH_REQ_GET_SHMEM_CONFIG, 2057, true), -EMSGSIZE);
	/* An ack is a u64. */
	cr_assert_eq(fe_size(UVH_REQ_SET_FEATURES, 8, true), 0);
	cr_assert_eq(fe_size(UVH_REQ_SET_FEATURES, 0, true), -EMSGSIZE);
	cr_assert_eq(be_size(UVH_BACKEND_REQ_SHMEM_MAP, 8, true), 0);
	cr_assert_eq(be_size(UVH_BACKEND_REQ_SHMEM_MAP, 4, true), -EMSGSIZE);
	/* SET_LOG_BASE's reply: empty (QEMU) or a u64 (DPDK). */
	cr_assert_eq(fe_size(UVH_REQ_SET_LOG_BASE, 0, true), 0);
	cr_assert_eq(fe_size(UVH_REQ_SET_LOG_BASE, 8, true), 0);
	cr_assert_eq(fe_size(UVH_REQ_SET_LOG_BASE, 16, true), -EMSGSIZE);
	uvh_log_set_sink(NULL, NULL);
}

/* ---- fds -------------------------------------------------------------------- */

static void fds_of(const struct uvh_request_info *info, uint64_t pf,
		   unsigned int want_min, unsigned int want_max)
{
	unsigned int lo = 99, hi = 99;

	uvh_msg_expected_fds(info, &msg, pf, &lo, &hi);
	cr_assert_eq(lo, want_min, "%s min %u", info->name, lo);
	cr_assert_eq(hi, want_max, "%s max %u", info->name, hi);
}

Test(message, expected_fds_vring)
{
	const uint32_t reqs[] = { UVH_REQ_SET_VRING_KICK, UVH_REQ_SET_VRING_CALL,
				  UVH_REQ_SET_VRING_ERR };

	memset(&msg, 0, sizeof(msg));
	for (size_t i = 0; i < 3; i++) {
		const struct uvh_request_info *info = uvh_frontend_request_info(reqs[i]);

		msg.payload.u64 = 3;
		fds_of(info, 0, 1, 1);
		msg.payload.u64 = 3 | UVH_VRING_NOFD_MASK;
		fds_of(info, 0, 0, 0);
		/* Only bit 8 counts, not other high bits. */
		msg.payload.u64 = 0x200;
		fds_of(info, 0, 1, 1);
	}
}

Test(message, expected_fds_log)
{
	const struct uvh_request_info *info =
		uvh_frontend_request_info(UVH_REQ_SET_LOG_BASE);
	uint64_t shmfd = 1ull << UVH_PROTOCOL_F_LOG_SHMFD;

	memset(&msg, 0, sizeof(msg));
	fds_of(info, shmfd, 1, 1);
	fds_of(info, ~0ull, 1, 1);
	fds_of(info, 0, 0, 0);
	fds_of(info, ~shmfd, 0, 0);
}

Test(message, expected_fds_regions)
{
	const struct uvh_request_info *info =
		uvh_frontend_request_info(UVH_REQ_SET_MEM_TABLE);

	memset(&msg, 0, sizeof(msg));
	for (uint32_t n = 0; n <= UVH_MEMORY_MAX_NREGIONS; n++) {
		msg.payload.mem_table.nregions = n;
		fds_of(info, 0, n, n);
	}
}

Test(message, expected_fds_fixed)
{
	memset(&msg, 0, sizeof(msg));
	fds_of(uvh_frontend_request_info(UVH_REQ_GET_FEATURES), ~0ull, 0, 0);
	fds_of(uvh_frontend_request_info(UVH_REQ_SET_VRING_ADDR), ~0ull, 0, 0);
	fds_of(uvh_frontend_request_info(UVH_REQ_SET_LOG_FD), 0, 1, 1);
	fds_of(uvh_frontend_request_info(UVH_REQ_SET_BACKEND_REQ_FD), 0, 1, 1);
	fds_of(uvh_frontend_request_info(UVH_REQ_ADD_MEM_REG), 0, 1, 1);
	fds_of(uvh_frontend_request_info(UVH_REQ_REM_MEM_REG), 0, 0, 1);
	fds_of(uvh_backend_request_info(UVH_BACKEND_REQ_VRING_HOST_NOTIFIER_MSG), 0, 0, 1);
	fds_of(uvh_backend_request_info(UVH_BACKEND_REQ_SHMEM_MAP), 0, 1, 1);
	fds_of(uvh_backend_request_info(UVH_BACKEND_REQ_SHMEM_UNMAP), 0, 0, 0);
}

Test(message, close_fds)
{
	int before = t_count_fds();

	memset(&msg, 0, sizeof(msg));
	msg.fds[0] = t_eventfd();
	msg.fds[1] = -1;	/* a hole is tolerated */
	msg.fds[2] = t_eventfd();
	msg.nfds = 3;
	cr_assert_eq(t_count_fds(), before + 2);
	uvh_msg_close_fds(&msg);
	cr_assert_eq(msg.nfds, 0);
	cr_assert_eq(t_count_fds(), before);
	/* Idempotent: nfds is 0 now, nothing is closed twice. */
	uvh_msg_close_fds(&msg);
	cr_assert_eq(t_count_fds(), before);
}
