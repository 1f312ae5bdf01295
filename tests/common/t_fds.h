/* SPDX-License-Identifier: MIT */
/*
 * Header-only fd helpers shared by the unit tests, the fuzz targets and
 * the interop peers (the fuzzers link an instrumented copy of the library,
 * so these cannot live in a library of their own).
 */
#ifndef UVH_T_FDS_H
#define UVH_T_FDS_H

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/** The most fds t_fds_attach() carries (more than any peer accepts). */
#define T_FDS_MAX 64

/** Control buffer for t_fds_attach(), aligned for a cmsghdr. */
struct t_fds_cmsg {
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(T_FDS_MAX * sizeof(int))];
	};
};

/**
 * Attach @nfds fds to @mh as one SCM_RIGHTS message built in @ctl; with
 * no fds, @mh is left without control data. More than T_FDS_MAX is a bug
 * in the test: abort.
 */
static inline void t_fds_attach(struct msghdr *mh, struct t_fds_cmsg *ctl, const int *fds,
				unsigned int nfds)
{
	struct cmsghdr *c;

	if (!nfds)
		return;
	if (nfds > T_FDS_MAX)
		abort();
	memset(ctl, 0, sizeof(*ctl));
	mh->msg_control = ctl->buf;
	mh->msg_controllen = CMSG_SPACE(nfds * sizeof(int));
	c = CMSG_FIRSTHDR(mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
	memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
}

/** Number of fds this process has open (entries of /proc/self/fd). */
static inline int t_fds_open_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		abort();
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;	/* the listing's own fd */
}

#endif
