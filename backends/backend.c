/* SPDX-License-Identifier: MIT */
/*
 * uvhost: opening a backend by name ("TYPE:ARG"), and what every backend
 * shares. See backend.h.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "log.h"

struct backend_kind {
	const char *name;
	enum uvh_backend_type type;
	int (*open)(const char *arg, const struct uvh_backend_open_opts *opts,
		    struct uvh_backend **out);
};

static const struct backend_kind kinds[] = {
	{ "soft", UVH_BACKEND_SOFT, uvh_backend_soft_open },
	{ "kern", UVH_BACKEND_KERN, uvh_backend_kern_open },
	{ "vdpa", UVH_BACKEND_VDPA, uvh_backend_vdpa_open },
	{ "user", UVH_BACKEND_USER, uvh_backend_user_open },
};

int uvh_backend_open(const char *spec, const struct uvh_backend_open_opts *opts,
		     struct uvh_backend **out)
{
	static const struct uvh_backend_open_opts defaults;
	struct uvh_backend *b = NULL;
	const char *colon;
	size_t tlen, len;
	int ret;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!spec) {
		UVH_ERR("backend: no spec");
		return -EINVAL;
	}
	/* The whole spec is kept in b->name: one that does not fit is refused
	 * rather than logged truncated. */
	len = strnlen(spec, sizeof(b->name));
	if (len >= sizeof(b->name)) {
		UVH_ERR("backend: spec longer than %zu bytes", sizeof(b->name) - 1);
		return -EINVAL;
	}
	colon = strchr(spec, ':');
	if (!colon || !colon[1]) {
		UVH_ERR("backend: '%s' is not TYPE:ARG", spec);
		return -EINVAL;
	}
	tlen = (size_t)(colon - spec);
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		const struct backend_kind *k = &kinds[i];

		if (tlen != strlen(k->name) || memcmp(spec, k->name, tlen))
			continue;
		ret = k->open(colon + 1, opts ? opts : &defaults, &b);
		if (ret) {
			UVH_ERR("backend: cannot open '%s': %s", spec, strerror(-ret));
			return ret;
		}
		if (!b)
			return -EIO;	/* a constructor broke its contract */
		b->type = k->type;
		memcpy(b->name, spec, len + 1);
		UVH_INFO("backend: %s open", b->name);
		*out = b;
		return 0;
	}
	UVH_ERR("backend: unknown type in '%s' (soft, kern, vdpa or user)", spec);
	return -EINVAL;
}

void uvh_backend_close(struct uvh_backend *b)
{
	if (!b)
		return;
	UVH_DEBUG("backend: %s closing", b->name);
	if (b->ops && b->ops->close)
		b->ops->close(b);
}

const char *uvh_backend_type_name(enum uvh_backend_type type)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (kinds[i].type == type)
			return kinds[i].name;
	return "unknown";
}

int uvh_backend_fd(const struct uvh_backend *b)
{
	return b ? b->fd : -1;
}
