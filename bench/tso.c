/* SPDX-License-Identifier: MIT */
/*
 * uvhost-bench --tso: one TCP/IPv4 stream between two ports of one
 * `uvhost-net --mode switch`, the generator's thread playing both guests
 * (sending on one device, receiving on the other), Gbit/s of TCP payload
 * delivered:
 *
 *   mtu-frames       offloads off: 1,502-byte frames (MSS 1448), plain
 *                    receiver: what a guest without TSO sends
 *   tso-passed       64 KiB TSO frames to a receiver with GUEST_TSO4: the
 *                    frame and its GSO header cross the switch whole
 *   tso-segmented    the same to a receiver without offloads: the device
 *                    cuts MSS segments and computes every checksum
 *   tso-partial      to a receiver with GUEST_CSUM only: segments, their
 *                    TCP checksums left partial for the receiver
 *
 * The receiver posts 4 KiB buffers (MRG_RXBUF, as Linux's mergeable ones)
 * and checks every frame's headers; the sender never has more payload on
 * its way than the posted buffers take, so nothing is dropped for want of
 * a buffer.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "c2c.h"
#include "util.h"
#include "virtio.h"

#define MSS		1448u
#define TSO_FRAME	(54u + 45u * MSS)	/* 65,214 bytes: 45 segments */
#define RX_FRAME	(4096u - 12u)		/* receiver buffers of 4 KiB */
#define F(x)		UVH_BIT(UVH_VIRTIO_NET_F_##x)

struct tso_case {
	const char *name;
	bool tso;
	uint64_t rx;		/* the receiver's offloads */
};

static const struct tso_case cases[] = {
	{ "mtu-frames", false, F(MRG_RXBUF) },
	{ "tso-passed", true, F(MRG_RXBUF) | F(GUEST_CSUM) | F(GUEST_TSO4) },
	{ "tso-segmented", true, F(MRG_RXBUF) },
	{ "tso-partial", true, F(MRG_RXBUF) | F(GUEST_CSUM) },
};
#define NCASES	(sizeof(cases) / sizeof(cases[0]))

struct tso_result {
	const struct tso_case *c;
	enum ring_kind ring;
	enum eng_mode mode;
	bool ok, far, contended;
	char err[160];
	double secs, gbps, mpps, gen_cpu, dev_cpu, c2c;
	uint64_t frames, bad;
};

static struct tso_result res[NCASES * NRINGS * NMODES];
static unsigned int nres;

static void run_one(struct tso_result *r, unsigned int id)
{
	struct bg_opts tx = {
		.dir = BG_TX, .packed = r->ring == RING_PACKED, .event_idx = o.event_idx,
		.frame = r->c->tso ? TSO_FRAME : 54 + MSS, .qsize = o.qsize, .cpu = o.cpu_gen,
		.connect_timeout_ms = 5000, .mss = MSS, .tso = r->c->tso,
		.offloads = r->c->tso ? F(CSUM) | F(HOST_TSO4) : 0,
	};
	struct bg_opts rx = {
		.dir = BG_RX, .packed = tx.packed, .event_idx = o.event_idx, .frame = RX_FRAME,
		.qsize = o.qsize, .cpu = -1, .connect_timeout_ms = 5000, .payload_rx = true,
		.offloads = r->c->rx,
	};
	char sa[128], sb[128];
	const char *args[] = { "--mode", "switch", "--socket-path", sa, "--socket-path", sb,
			       "--engine-mode", mode_names[r->mode], NULL };
	struct child ch = { 0 };
	struct bg gtx, grx;
	clockid_t clk;
	double t0, t1, g0 = -1, g1, d0, d1, w0, w1;
	uint64_t b0, b1, f0, f1;
	int ret;

	r->c2c = o.c2c ? uvhb_c2c_ns(o.cpu_gen, o.cpu_dev, 100000) : -1;
	snprintf(sa, sizeof(sa), "%s/tso%u-a.sock", tmpdir, id);
	snprintf(sb, sizeof(sb), "%s/tso%u-b.sock", tmpdir, id);
	ret = child_spawn(&ch, id, args);
	if (ret) {
		snprintf(r->err, sizeof(r->err), "cannot start uvhost-net: %s", strerror(-ret));
		return;
	}
	tx.socket_path = sa;
	rx.socket_path = sb;
	memset(&grx, 0, sizeof(grx));
	ret = bg_open(&gtx, &tx);
	if (!ret)
		ret = bg_open(&grx, &rx);
	if (!ret) {
		bg_pair(&gtx, &grx);
		ret = bg_start(&gtx);
	}
	if (ret) {
		snprintf(r->err, sizeof(r->err), "set-up failed: %s", strerror(-ret));
		goto out;
	}
	sleep_s(o.warmup);
	t0 = now_s();
	b0 = bg_payload(&gtx);
	f0 = bg_frames(&gtx);
	if (bg_cpu_clock(&gtx, &clk) == 0)
		g0 = clock_s(clk);
	d0 = proc_cpu_s(ch.pid);
	w0 = runq_wait_s(ch.pid, 0);
	sleep_s(o.secs);
	t1 = now_s();
	b1 = bg_payload(&gtx);
	f1 = bg_frames(&gtx);
	g1 = g0 >= 0 ? clock_s(clk) : -1;
	d1 = proc_cpu_s(ch.pid);
	w1 = runq_wait_s(ch.pid, 0);
	r->bad = atomic_load(&gtx.bad);
	bg_stop(&gtx);
	if (interrupted) {
		snprintf(r->err, sizeof(r->err), "interrupted");
		goto out;
	}
	r->secs = t1 - t0;
	r->frames = f1 - f0;
	r->gbps = (double)(b1 - b0) * 8 / r->secs / 1e9;
	r->mpps = (double)r->frames / r->secs / 1e6;
	r->gen_cpu = g0 >= 0 && g1 >= 0 ? (g1 - g0) / r->secs : -1;
	r->dev_cpu = d0 >= 0 && d1 >= 0 ? (d1 - d0) / r->secs : -1;
	r->far = r->c2c > UVHB_C2C_FAR_NS;
	r->contended = (w0 >= 0 && w1 >= 0 && (w1 - w0) / r->secs > CONTENDED_SHARE) ||
		       (r->gen_cpu >= 0 && r->gen_cpu < 1 - 2 * CONTENDED_SHARE);
	if (child_gone(&ch))
		snprintf(r->err, sizeof(r->err), "uvhost-net exited during the run");
	else if (!r->frames)
		snprintf(r->err, sizeof(r->err), "no frames moved");
	else if (r->bad)
		snprintf(r->err, sizeof(r->err), "%llu bad frames", (unsigned long long)r->bad);
	r->ok = !r->err[0];
out:
	bg_close(&gtx);
	bg_close(&grx);
	if (!r->ok && !child_gone(&ch))
		child_log_tail(&ch);
	child_stop(&ch);
	if (!o.keep_logs)
		unlink(ch.log);
	unlink(sa);
	unlink(sb);
}

unsigned int tso_run(void)
{
	unsigned int failed = 0;

	for (unsigned int ri = 0; ri < NRINGS; ri++) {
		if (!(o.rings & 1u << ri))
			continue;
		for (unsigned int m = 0; m < NMODES; m++) {
			if (!(o.modes & 1u << m))
				continue;
			for (unsigned int k = 0; k < NCASES && !interrupted; k++) {
				struct tso_result *r = &res[nres];

				memset(r, 0, sizeof(*r));
				r->c = &cases[k];
				r->ring = (enum ring_kind)ri;
				r->mode = (enum eng_mode)m;
				run_one(r, nres);
				nres++;
				if (!r->ok)
					failed++;
				if (!o.json)
					fprintf(stderr, "  %-14s %-6s %-8s %7.2f Gbit/s %s\n", r->c->name,
						ring_names[ri], mode_names[m], r->gbps, r->err);
			}
		}
	}
	return failed;
}

void tso_print_table(void)
{
	printf("\nTCP payload from one switch port to another (MSS %u, %u-byte TSO frames):\n",
	       MSS, TSO_FRAME);
	printf("%-14s %-7s %-9s %14s %12s %8s %8s  %s\n", "case", "ring", "engine",
	       "payload Gbit/s", "frames Mpps", "dev CPU", "gen CPU", "flags");
	for (unsigned int i = 0; i < nres; i++) {
		const struct tso_result *r = &res[i];

		if (!r->ok) {
			printf("%-14s %-7s %-9s FAILED: %s\n", r->c->name, ring_names[r->ring],
			       mode_names[r->mode], r->err);
			continue;
		}
		printf("%-14s %-7s %-9s %14.2f %12.3f %7.0f%% %7.0f%%  %s%s\n", r->c->name,
		       ring_names[r->ring], mode_names[r->mode], r->gbps, r->mpps,
		       100 * r->dev_cpu, 100 * r->gen_cpu, r->far ? "FAR " : "",
		       r->contended ? "CONTENDED" : "");
	}
	printf("frames Mpps: frames the receiver got (segments, or whole TSO frames); a FAR or\n"
	       "CONTENDED row ran on cores placed far apart or shared: compare within one run.\n");
}

void tso_print_json(void)
{
	printf("{\n  \"tool\": \"uvhost-bench\",\n  \"mss\": %u,\n  \"tso_frame\": %u,\n"
	       "  \"tso\": [\n", MSS, TSO_FRAME);
	for (unsigned int i = 0; i < nres; i++) {
		const struct tso_result *r = &res[i];

		printf("    {\"case\": \"%s\", \"ring\": \"%s\", \"engine\": \"%s\", \"ok\": %s, ",
		       r->c->name, ring_names[r->ring], mode_names[r->mode],
		       r->ok ? "true" : "false");
		json_num("payload_gbps", r->ok ? r->gbps : -1, false);
		json_num("frames_mpps", r->ok ? r->mpps : -1, false);
		json_num("dev_cpu", r->ok ? r->dev_cpu : -1, false);
		json_num("gen_cpu", r->ok ? r->gen_cpu : -1, false);
		json_num("c2c_ns", r->c2c, false);
		printf("\"far\": %s, \"contended\": %s, \"error\": ", r->far ? "true" : "false",
		       r->contended ? "true" : "false");
		json_str(r->err);
		printf("}%s\n", i + 1 < nres ? "," : "");
	}
	printf("  ]\n}\n");
}
