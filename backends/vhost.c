/* SPDX-License-Identifier: MIT */
/*
 * uvhost: opening a backend by name ("TYPE:ARG"), and what every backend
 * shares. See backend.h.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vhost.h"
#include "log.h"

struct backend_kind {
	const char *name;
	enum uvh_vhost_type type;
	int (*open)(const char *arg, const struct uvh_vhost_open_opts *opts,
		    struct uvh_vhost **out);
};

static const struct backend_kind kinds[] = {
	{ "soft", UVH_VHOST_SOFT, uvh_vhost_soft_open },
	{ "kern", UVH_VHOST_KERN, uvh_vhost_kern_open },
	{ "vdpa", UVH_VHOST_VDPA, uvh_vhost_vdpa_open },
	{ "user", UVH_VHOST_USER, uvh_vhost_user_open },
};

int uvh_vhost_open(const char *spec, const struct uvh_vhost_open_opts *opts,
		     struct uvh_vhost **out)
{
	static const struct uvh_vhost_open_opts defaults;
	struct uvh_vhost *b = NULL;
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

void uvh_vhost_close(struct uvh_vhost *b)
{
	if (!b)
		return;
	UVH_DEBUG("backend: %s closing", b->name);
	if (b->ops && b->ops->close)
		b->ops->close(b);
}

const char *uvh_vhost_type_name(enum uvh_vhost_type type)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (kinds[i].type == type)
			return kinds[i].name;
	return "unknown";
}

int uvh_vhost_fd(const struct uvh_vhost *b)
{
	return b ? b->fd : -1;
}
