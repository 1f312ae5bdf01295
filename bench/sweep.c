/* SPDX-License-Identifier: MIT */
/*
 * uvhost-bench --load-sweep: what the back-end's CPU and latency do as the
 * load grows. Per ring layout: the poll mode's peak (loop, flat out), then
 * for each engine mode a ping-pong (one frame in flight) and the load
 * points (shares of that peak, paced), each a fresh back-end. Table, JSON
 * and a two-panel SVG: CPU share and p99 round trip against offered load,
 * with the 100 % that a polling back-end (DPDK's vhost PMD) burns at any
 * load.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

static bool in_sweep(const struct result *r)
{
	return r->load >= 0;
}

/* The kind of a sweep row: the peak, a ping-pong, or a load point. */
static const char *row_kind(const struct result *r, char *buf, size_t len)
{
	if (r->load >= 100 && !r->rate_pps)
		return "peak";
	if (r->inflight == 1)
		return "ping-pong";
	snprintf(buf, len, "%g%%", r->load);
	return buf;
}

unsigned int sweep_run(unsigned int *ncases)
{
	unsigned int failed = 0;
	uint32_t frame = o.sizes[0];

	for (unsigned int ri = 0; ri < NRINGS && !interrupted; ri++) {
		struct result *peak;
		double pps;

		if (!(o.rings & 1u << ri))
			continue;
		peak = new_case(BG_LOOP, (enum ring_kind)ri, MODE_POLL, frame);
		if (!peak)
			break;
		peak->load = 100;
		run_attempts(peak, ncases);
		if (!peak->ok || !peak->frames) {
			failed++;
			continue;
		}
		/* a flagged peak still scales the loads (its row says so) */
		pps = peak->mpps * 1e6;
		for (unsigned int m = 0; m < NMODES && !interrupted; m++) {
			if (!(o.modes & 1u << m))
				continue;
			for (int p = -1; p < (int)o.npoints && !interrupted; p++) {
				struct result *r = new_case(BG_LOOP, (enum ring_kind)ri,
							    (enum eng_mode)m, frame);

				if (!r)
					return failed + 1;
				if (p < 0) {
					r->inflight = 1;	/* the ping-pong */
					r->load = 0;
				} else {
					r->load = o.points[p];
					r->rate_pps = pps * o.points[p] / 100;
				}
				run_attempts(r, ncases);
				if (!r->ok)
					failed++;
			}
		}
	}
	return failed;
}

void sweep_print_table(void)
{
	printf("\n%-7s %-9s %-9s %8s %8s %8s %8s %20s  %s\n", "ring",
	       o.connect ? "back-end" : "engine", "load", "offered", "Mpps", "gen CPU",
	       o.connect ? "dev CPU" : "net CPU", "RTT us p50/p99/p99.9", "notes");
	for (unsigned int i = 0; i < nresults; i++) {
		const struct result *r = &results[i];
		char kind[16], off[16], mpps[16], gc[16], dc[16], rtt[48], notes[200] = "";

		if (!in_sweep(r))
			continue;
		snprintf(off, sizeof(off), r->rate_pps > 0 ? "%.3f" : "-", r->rate_pps / 1e6);
		snprintf(mpps, sizeof(mpps), r->no_figure || !r->frames ? "-" : "%.3f", r->mpps);
		snprintf(gc, sizeof(gc), r->gen_cpu >= 0 ? "%.0f%%" : "-", r->gen_cpu * 100);
		snprintf(dc, sizeof(dc), r->dev_cpu >= 0 ? "%.1f%%" : "-", r->dev_cpu * 100);
		if (r->rtt_p50 >= 0 && !r->no_figure)
			snprintf(rtt, sizeof(rtt), "%.1f/%.1f/%.1f", r->rtt_p50, r->rtt_p99,
				 r->rtt_p999);
		else
			snprintf(rtt, sizeof(rtt), "-");
		if (r->far)
			strcat(notes, "FAR ");
		if (r->contended)
			strcat(notes, "CONTENDED ");
		if (r->no_figure)
			strcat(notes, "no clean attempt: no figure ");
		if (r->err[0])
			snprintf(notes + strlen(notes), sizeof(notes) - strlen(notes), "%s", r->err);
		printf("%-7s %-9s %-9s %8s %8s %8s %8s %20s  %s\n", ring_names[r->ring],
		       o.connect ? "external" : mode_names[r->mode], row_kind(r, kind, sizeof(kind)),
		       off, mpps, gc, dc, rtt, notes);
	}
	printf("\nload: share of the poll mode's peak offered (paced); peak: poll mode flat out;\n"
	       "ping-pong: one frame in flight. CPU: share of one core over the window.\n"
	       "RTT: a frame's round trip, sent to received back, on the generator's clock.\n");
	if (!o.connect)
		printf("A polling back-end (DPDK's vhost PMD, uvhost in poll mode) uses 100%% of "
		       "its core at any load.\n");
}

void sweep_print_json(void)
{
	bool first = true;

	printf("{\n  \"tool\": \"uvhost-bench\",\n  \"sweep\": true,\n  \"cpus\": [%d, %d],\n"
	       "  \"seconds\": %.3f,\n  \"queue_size\": %u,\n  \"event_idx\": %s,\n"
	       "  \"frame\": %u,\n  \"backend\": ", o.cpu_gen, o.cpu_dev, o.secs, o.qsize,
	       o.event_idx ? "true" : "false", o.sizes[0]);
	json_str(o.connect ? o.connect : "uvhost-net");
	printf(",\n  \"points\": [\n");
	for (unsigned int i = 0; i < nresults; i++) {
		const struct result *r = &results[i];
		char kind[16];

		if (!in_sweep(r))
			continue;
		printf("%s    {\"ring\": \"%s\", \"engine\": \"%s\", \"kind\": ", first ? "" : ",\n",
		       ring_names[r->ring], o.connect ? "external" : mode_names[r->mode]);
		json_str(row_kind(r, kind, sizeof(kind)));
		printf(", \"ok\": %s, ", r->ok ? "true" : "false");
		json_num("load_pct", r->inflight == 1 ? -1 : r->load, false);
		json_num("offered_mpps", r->rate_pps > 0 ? r->rate_pps / 1e6 : -1, false);
		json_num("mpps", r->frames && !r->no_figure ? r->mpps : -1, false);
		json_num("gen_cpu", r->gen_cpu, false);
		json_num("dev_cpu", r->dev_cpu, false);
		json_num("rtt_p50_us", r->no_figure ? -1 : r->rtt_p50, false);
		json_num("rtt_p99_us", r->no_figure ? -1 : r->rtt_p99, false);
		json_num("rtt_p999_us", r->no_figure ? -1 : r->rtt_p999, false);
		json_num("c2c_before_ns", r->c2c_before, false);
		json_num("c2c_after_ns", r->c2c_after, false);
		printf("\"far\": %s, \"contended\": %s, \"error\": ", r->far ? "true" : "false",
		       r->contended ? "true" : "false");
		json_str(r->err);
		printf("}");
		first = false;
	}
	printf("\n  ]\n}\n");
}

/* ---- the chart ---------------------------------------------------------------------- */

struct panel {
	double x, y, w, h;	/* plot area */
	double ymin, ymax;
	bool log;		/* log10 y axis */
};

static double py(const struct panel *p, double v)
{
	double f;

	if (p->log) {
		if (v < p->ymin)
			v = p->ymin;
		f = (log10(v) - log10(p->ymin)) / (log10(p->ymax) - log10(p->ymin));
	} else {
		f = (v - p->ymin) / (p->ymax - p->ymin);
	}
	if (f > 1)
		f = 1;
	return p->y + p->h - f * p->h;
}

static double px(const struct panel *p, double load)
{
	return p->x + load / 100 * p->w;
}

static void axes(FILE *f, const struct panel *p, const char *ylabel)
{
	double step;

	if (p->log) {
		for (double v = p->ymin; v <= p->ymax * 1.001; v *= 10) {
			fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
				"stroke=\"#ddd\"/>\n", p->x, py(p, v), p->x + p->w, py(p, v));
			fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
				p->x - 6, py(p, v) + 4, v);
		}
	} else {
		step = nice_step(p->ymax - p->ymin, 5);
		for (double v = p->ymin; v <= p->ymax + step / 2; v += step) {
			fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
				"stroke=\"#ddd\"/>\n", p->x, py(p, v), p->x + p->w, py(p, v));
			fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
				p->x - 6, py(p, v) + 4, v);
		}
	}
	for (int l = 0; l <= 100; l += 20) {
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d%%</text>\n",
			px(p, l), p->y + p->h + 16, l);
	}
	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
		"stroke=\"black\"/>\n", p->x, p->y, p->w, p->h);
	fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\">"
		"%s</text>\n", p->x - 48, p->y + p->h / 2, ylabel);
}

/* One series: ring @ri, mode @m, value @what (0: CPU %, 1: p99 us) against load. */
static void series(FILE *f, const struct panel *p, unsigned int ri, unsigned int m, int what,
		   const char *color, bool dashed)
{
	bool first = true;

	fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", color,
		dashed ? " stroke-dasharray=\"6 3\"" : "");
	for (unsigned int i = 0; i < nresults; i++) {
		const struct result *r = &results[i];
		double v = what ? r->rtt_p99 : r->dev_cpu * 100;

		if (!in_sweep(r) || r->ring != ri || r->mode != m || r->inflight == 1 ||
		    !r->rate_pps || r->no_figure || !r->frames || v < 0)
			continue;
		fprintf(f, "%s%.1f,%.1f", first ? "" : " ", px(p, r->load), py(p, v));
		first = false;
	}
	fprintf(f, "\"/>\n");
	for (unsigned int i = 0; i < nresults; i++) {
		const struct result *r = &results[i];
		double v = what ? r->rtt_p99 : r->dev_cpu * 100;

		if (!in_sweep(r) || r->ring != ri || r->mode != m || r->inflight == 1 ||
		    !r->rate_pps || r->no_figure || !r->frames || v < 0)
			continue;
		fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>%s %s, "
			"%g%% load (%.2f Mpps): CPU %.1f%%, RTT p99 %.1f us</title></circle>\n",
			px(p, r->load), py(p, v), color, ring_names[ri],
			o.connect ? "external" : mode_names[m], r->load, r->mpps,
			r->dev_cpu * 100, r->rtt_p99);
	}
}

int sweep_write_svg(const char *path)
{
	const double W = 820, H = 720, L = 80, R = 230;
	struct panel cpu = { L, 60, W - L - R, 260, 0, 100, false };
	struct panel lat = { L, 390, W - L - R, 260, 1, 10, true };
	unsigned int s = 0;
	FILE *f;

	for (unsigned int i = 0; i < nresults; i++) {
		const struct result *r = &results[i];

		if (in_sweep(r) && r->dev_cpu * 100 > cpu.ymax)
			cpu.ymax = ceil(r->dev_cpu * 10) * 10;
		while (in_sweep(r) && !r->no_figure && r->rtt_p99 > lat.ymax)
			lat.ymax *= 10;
	}
	f = fopen(path, "w");
	if (!f)
		return -errno;
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
		"viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
		"<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H, W, H);
	fprintf(f, "<text x=\"%.0f\" y=\"24\" font-size=\"16\" font-weight=\"bold\">%s: CPU and "
		"latency against load</text>\n", L, o.connect ? "back-end" : "uvhost-net");
	fprintf(f, "<text x=\"%.0f\" y=\"42\" fill=\"#555\">loop %u B, queue size %u%s; load = "
		"share of the in-run poll peak</text>\n", L, o.sizes[0], o.qsize,
		o.event_idx ? ", EVENT_IDX" : "");
	axes(f, &cpu, "back-end CPU (% of a core)");
	axes(f, &lat, "round trip p99 (us)");
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">offered load (%% of the "
		"poll peak)</text>\n", L + cpu.w / 2, H - 14);
	/* what a polling back-end burns, and load x the poll cost per frame */
	fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555\" "
		"stroke-width=\"2\" stroke-dasharray=\"2 3\"/>\n", px(&cpu, 0), py(&cpu, 100),
		px(&cpu, 100), py(&cpu, 100));
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">DPDK vhost PMD, poll: 100%%</text>\n",
		cpu.x + cpu.w + 16, py(&cpu, 100) + 4);
	fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#aaa\" "
		"stroke-dasharray=\"1 3\"/>\n", px(&cpu, 0), py(&cpu, 0), px(&cpu, 100),
		py(&cpu, 100));
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#888\">ideal: load x poll cost</text>\n",
		cpu.x + cpu.w + 16, py(&cpu, 100) + 20);
	for (unsigned int ri = 0; ri < NRINGS; ri++) {
		if (!(o.rings & 1u << ri))
			continue;
		for (unsigned int m = 0; m < NMODES; m++) {
			const char *color = svg_colors[s % 12];
			double ly = cpu.y + 50 + s * 20;

			if (!(o.modes & 1u << m))
				continue;
			series(f, &cpu, ri, m, 0, color, ri == RING_PACKED);
			series(f, &lat, ri, m, 1, color, ri == RING_PACKED);
			fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
				"stroke-width=\"2\"%s/>\n", cpu.x + cpu.w + 16, ly, cpu.x + cpu.w + 40,
				ly, color, ri == RING_PACKED ? " stroke-dasharray=\"6 3\"" : "");
			fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%s %s</text>\n", cpu.x + cpu.w + 46,
				ly + 4, ring_names[ri], o.connect ? "external" : mode_names[m]);
			s++;
		}
	}
	fprintf(f, "</svg>\n");
	if (fclose(f))
		return -errno;
	return 0;
}
