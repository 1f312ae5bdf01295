/* SPDX-License-Identifier: MIT */
/* listener.c: server sockets on a path, accept timeouts, client back-off. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "listener.h"
#include "t_helpers.h"

static long elapsed_ms(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

static void start_clock(struct timespec *t0)
{
	clock_gettime(CLOCK_MONOTONIC, t0);
}

/* A socket file with nothing listening on it, as a crashed server leaves. */
static void make_stale_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
}

static mode_t file_mode(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0);
	return st.st_mode & 0777;
}

static void check_echo(int a, int b)
{
	char buf[8] = { 0 };

	cr_assert_eq(write(a, "ping", 4), 4);
	cr_assert_eq(read(b, buf, sizeof(buf)), 4);
	cr_assert_str_eq(buf, "ping");
}

Test(listener, open_accept_connect_round_trip)
{
	struct uvh_listener *l;
	char path[108];
	int before = t_count_fds(), c, s, flags;

	t_socket_path(path, sizeof(path), "rt");
	cr_assert_eq(uvh_listener_open(path, NULL, &l), 0);
	cr_assert_str_eq(uvh_listener_path(l), path);
	flags = fcntl(uvh_listener_fd(l), F_GETFL);
	cr_assert(flags & O_NONBLOCK, "the listening socket is non-blocking");
	cr_assert(fcntl(uvh_listener_fd(l), F_GETFD) & FD_CLOEXEC);

	c = uvh_connect(path, NULL);
	cr_assert_geq(c, 0, "connect: %s", strerror(-c));
	s = uvh_listener_accept(l, 1000);
	cr_assert_geq(s, 0, "accept: %s", strerror(-s));
	cr_assert_eq(fcntl(s, F_GETFL) & O_NONBLOCK, 0, "accepted fd is blocking");
	cr_assert(fcntl(s, F_GETFD) & FD_CLOEXEC, "accepted fd is close-on-exec");
	cr_assert_eq(fcntl(c, F_GETFL) & O_NONBLOCK, 0, "client fd is blocking");
	cr_assert(fcntl(c, F_GETFD) & FD_CLOEXEC, "client fd is close-on-exec");
	check_echo(c, s);
	check_echo(s, c);
	close(c);
	close(s);

	uvh_listener_close(l);
	cr_assert_eq(access(path, F_OK), -1, "the path is unlinked on close");
	cr_assert_eq(t_count_fds(), before);
}

Test(listener, stale_socket_file_is_replaced)
{
	struct uvh_listener *l;
	char path[108];
	int before = t_count_fds(), c, s;

	t_log_capture();
	t_socket_path(path, sizeof(path), "stale");
	make_stale_socket(path);
	cr_assert_eq(access(path, F_OK), 0);
	cr_assert_eq(uvh_listener_open(path, NULL, &l), 0);
	cr_assert(t_log_contains("replacing stale socket"));
	c = uvh_connect(path, NULL);
	cr_assert_geq(c, 0);
	s = uvh_listener_accept(l, 1000);
	cr_assert_geq(s, 0);
	check_echo(c, s);
	close(c);
	close(s);
	uvh_listener_close(l);
	cr_assert_eq(t_count_fds(), before);
}

Test(listener, live_path_is_in_use)
{
	struct uvh_listener *l, *l2 = (void *)1;
	char path[108];
	int before = t_count_fds(), c, s;

	t_log_capture();
	t_socket_path(path, sizeof(path), "live");
	cr_assert_eq(uvh_listener_open(path, NULL, &l), 0);
	cr_assert_eq(uvh_listener_open(path, NULL, &l2), -EADDRINUSE);
	cr_assert_null(l2);
	cr_assert(t_log_contains("in use by a live server"));
	/* The first server is untouched. */
	c = uvh_connect(path, NULL);
	cr_assert_geq(c, 0);
	s = uvh_listener_accept(l, 1000);
	cr_assert_geq(s, 0);
	close(c);
	close(s);
	uvh_listener_close(l);
	cr_assert_eq(t_count_fds(), before);
}

Test(listener, regular_file_is_not_replaced)
{
	struct uvh_listener *l;
	char path[108];
	int before = t_count_fds(), fd;

	t_socket_path(path, sizeof(path), "file");
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "data", 4), 4);
	close(fd);
	cr_assert_eq(uvh_listener_open(path, NULL, &l), -EEXIST);
	cr_assert_eq(access(path, F_OK), 0, "the file is left alone");
	unlink(path);
	cr_assert_eq(t_count_fds(), before);
}

Test(listener, path_too_long)
{
	struct uvh_listener *l;
	char path[200];
	int before = t_count_fds();

	memset(path, 'a', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = 0;
	cr_assert_eq(uvh_listener_open(path, NULL, &l), -ENAMETOOLONG);
	cr_assert_eq(uvh_connect(path, NULL), -ENAMETOOLONG);
	/* 107 bytes plus the NUL is the longest that fits sun_path. */
	path[sizeof(((struct sockaddr_un *)0)->sun_path)] = 0;
	cr_assert_eq(uvh_listener_open(path, NULL, &l), -ENAMETOOLONG);
	cr_assert_eq(uvh_listener_open("", NULL, &l), -EINVAL);
	cr_assert_eq(t_count_fds(), before);
}

Test(listener, mode_default_0600_and_0660_on_request)
{
	struct uvh_listener_opts opts = { .mode = 0660 };
	struct uvh_listener *l;
	char path[108];
	int before = t_count_fds();

	t_socket_path(path, sizeof(path), "mode");
	cr_assert_eq(uvh_listener_open(path, NULL, &l), 0);
	cr_assert_eq(file_mode(path), 0600, "mode %o", file_mode(path));
	uvh_listener_close(l);

	cr_assert_eq(uvh_listener_open(path, &opts, &l), 0);
	cr_assert_eq(file_mode(path), 0660, "mode %o", file_mode(path));
	uvh_listener_close(l);

	opts.mode = 01777;	/* not a permission mode */
	cr_assert_eq(uvh_listener_open(path, &opts, &l), -EINVAL);
	cr_assert_eq(t_count_fds(), before);
}

Test(listener, owner_is_applied)
{
	struct uvh_listener_opts opts = {
		.set_owner = 1, .owner = getuid(), .group = getgid(),
	};
	struct uvh_listener *l;
	struct stat st;
	char path[108];

	t_socket_path(path, sizeof(path), "own");
	cr_assert_eq(uvh_listener_open(path, &opts, &l), 0);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_uid, getuid());
	cr_assert_eq(st.st_gid, getgid());
	uvh_listener_close(l);
}

Test(listener, accept_times_out)
{
	struct uvh_listener *l;
	struct timespec t0;
	char path[108];
	int before = t_count_fds();
	long ms;

	t_socket_path(path, sizeof(path), "tmo");
	cr_assert_eq(uvh_listener_open(path, NULL, &l), 0);
	start_clock(&t0);
	cr_assert_eq(uvh_listener_accept(l, 60), -ETIMEDOUT);
	ms = elapsed_ms(&t0);
	cr_assert_geq(ms, 55, "waited only %ld ms", ms);
	cr_assert_lt(ms, 1000, "waited %ld ms", ms);
	start_clock(&t0);
	cr_assert_eq(uvh_listener_accept(l, 0), -ETIMEDOUT);
	cr_assert_lt(elapsed_ms(&t0), 50, "timeout 0 does not wait");
	uvh_listener_close(l);
	cr_assert_eq(t_count_fds(), before);
}

Test(listener, close_keeps_a_successors_socket)
{
	struct uvh_listener *l1, *l2;
	char path[108];
	int before = t_count_fds(), c, s;

	t_socket_path(path, sizeof(path), "succ");
	cr_assert_eq(uvh_listener_open(path, NULL, &l1), 0);
	unlink(path);
	cr_assert_eq(uvh_listener_open(path, NULL, &l2), 0);
	uvh_listener_close(l1);
	cr_assert_eq(access(path, F_OK), 0, "l2's socket file survives l1's close");
	c = uvh_connect(path, NULL);
	cr_assert_geq(c, 0);
	s = uvh_listener_accept(l2, 1000);
	cr_assert_geq(s, 0);
	close(c);
	close(s);
	uvh_listener_close(l2);
	cr_assert_eq(access(path, F_OK), -1);
	cr_assert_eq(t_count_fds(), before);
}

struct late_server {
	const char *path;
	int delay_ms;
	struct uvh_listener *l;
};

static void *open_later(void *arg)
{
	struct late_server *ls = arg;
	struct timespec ts = { 0, ls->delay_ms * 1000000L };

	nanosleep(&ts, NULL);
	if (uvh_listener_open(ls->path, NULL, &ls->l))
		ls->l = NULL;
	return NULL;
}

static void connect_to_late_server(const char *tag, bool stale_first)
{
	struct uvh_connect_opts opts = { .timeout_ms = 3000, .initial_delay_ms = 10 };
	struct late_server ls = { .delay_ms = 100 };
	struct timespec t0;
	pthread_t th;
	char path[108];
	int before = t_count_fds(), c, s;
	long ms;

	t_socket_path(path, sizeof(path), tag);
	if (stale_first)
		make_stale_socket(path);	/* ECONNREFUSED until then */
	ls.path = path;
	start_clock(&t0);
	cr_assert_eq(pthread_create(&th, NULL, open_later, &ls), 0);
	c = uvh_connect(path, &opts);
	ms = elapsed_ms(&t0);
	pthread_join(th, NULL);
	cr_assert_not_null(ls.l);
	cr_assert_geq(c, 0, "connect: %s", strerror(-c));
	cr_assert_geq(ms, 95, "connected after %ld ms, before the server existed", ms);
	cr_assert_lt(ms, 2000, "took %ld ms", ms);
	s = uvh_listener_accept(ls.l, 1000);
	cr_assert_geq(s, 0);
	check_echo(c, s);
	close(c);
	close(s);
	uvh_listener_close(ls.l);
	cr_assert_eq(t_count_fds(), before);
}

Test(listener, connect_retries_until_listener_appears)
{
	connect_to_late_server("late", false);
}

Test(listener, connect_retries_past_a_stale_socket)
{
	connect_to_late_server("late-stale", true);
}

Test(listener, connect_gives_up)
{
	struct uvh_connect_opts opts = { .timeout_ms = 120, .initial_delay_ms = 5,
					 .max_delay_ms = 40 };
	struct timespec t0;
	char path[108];
	int before = t_count_fds();
	long ms;

	t_log_capture();
	t_socket_path(path, sizeof(path), "none");
	start_clock(&t0);
	cr_assert_eq(uvh_connect(path, &opts), -ETIMEDOUT);
	ms = elapsed_ms(&t0);
	cr_assert_geq(ms, 115, "gave up after %ld ms", ms);
	cr_assert_lt(ms, 1000, "gave up after %ld ms", ms);
	cr_assert(t_log_contains("gave up after 120 ms"));

	/* One try: the error itself, at once. */
	cr_assert_eq(uvh_connect(path, NULL), -ENOENT);
	make_stale_socket(path);
	cr_assert_eq(uvh_connect(path, NULL), -ECONNREFUSED);
	unlink(path);
	cr_assert_eq(t_count_fds(), before);
}

static void *raise_stop(void *arg)
{
	struct timespec ts = { 0, 60 * 1000000L };

	nanosleep(&ts, NULL);
	__atomic_store_n((volatile int *)arg, 1, __ATOMIC_RELAXED);
	return NULL;
}

Test(listener, connect_honours_stop)
{
	volatile int stop = 1;
	struct uvh_connect_opts opts = { .timeout_ms = -1, .max_delay_ms = 500,
					 .stop = &stop };
	struct timespec t0;
	pthread_t th;
	char path[108];
	int before = t_count_fds();
	long ms;

	t_socket_path(path, sizeof(path), "stop");
	cr_assert_eq(uvh_connect(path, &opts), -ECANCELED, "stop set before the call");

	stop = 0;
	start_clock(&t0);
	cr_assert_eq(pthread_create(&th, NULL, raise_stop, (void *)&stop), 0);
	cr_assert_eq(uvh_connect(path, &opts), -ECANCELED);
	ms = elapsed_ms(&t0);
	pthread_join(th, NULL);
	cr_assert_geq(ms, 55, "stopped after %ld ms", ms);
	cr_assert_lt(ms, 400, "stop seen late: %ld ms", ms);
	cr_assert_eq(t_count_fds(), before);
}

/* ---- access control: uid allow-list, refusing a busy port ------------------------- */

/* After the server closed our connection, a read sees EOF at once. */
static void check_closed_by_server(int c)
{
	struct pollfd p = { .fd = c, .events = POLLIN };
	char b;

	cr_assert_eq(poll(&p, 1, 1000), 1, "the server did not close the connection");
	cr_assert_eq(read(c, &b, 1), 0, "EOF expected");
}

Test(listener, allow_list_refuses_an_unlisted_uid)
{
	uid_t others[2] = { getuid() + 1, getuid() + 2 };
	struct uvh_listener_opts opts = { .allow_uids = others, .n_allow_uids = 2 };
	struct uvh_listener *l;
	char path[108];
	int before = t_count_fds(), c;

	t_log_capture();
	t_socket_path(path, sizeof(path), "deny");
	cr_assert_eq(uvh_listener_open(path, &opts, &l), 0);
	others[0] = getuid();	/* the listener keeps its own copy */
	c = uvh_connect(path, NULL);
	cr_assert_geq(c, 0);
	cr_assert_eq(uvh_listener_accept(l, 200), -ETIMEDOUT,
		     "the refused peer is not handed out; the wait goes on");
	check_closed_by_server(c);
	cr_assert_eq(uvh_listener_refused(l), 1);
	cr_assert(t_log_contains("uid not in the allow-list"));
	close(c);
	uvh_listener_close(l);
	cr_assert_eq(t_count_fds(), before, "the refused connection's fd is closed");
	t_log_reset();
}

Test(listener, allow_list_admits_a_listed_uid)
{
	uid_t ok[2] = { getuid() + 7, getuid() };
	struct uvh_listener_opts opts = { .allow_uids = ok, .n_allow_uids = 2 };
	struct uvh_listener *l;
	char path[108];
	int before = t_count_fds(), c, s;

	t_socket_path(path, sizeof(path), "allow");
	cr_assert_eq(uvh_listener_open(path, &opts, &l), 0);
	c = uvh_connect(path, NULL);
	cr_assert_geq(c, 0);
	s = uvh_listener_accept(l, 1000);
	cr_assert_geq(s, 0, "accept: %s", strerror(-s));
	check_echo(c, s);
	cr_assert_eq(uvh_listener_refused(l), 0);
	close(c);
	close(s);
	uvh_listener_close(l);
	cr_assert_eq(t_count_fds(), before);
}

Test(listener, allow_list_bad_options)
{
	uid_t many[UVH_LISTENER_MAX_UIDS + 1] = { 0 };
	struct uvh_listener_opts opts = { .allow_uids = many,
					  .n_allow_uids = UVH_LISTENER_MAX_UIDS + 1 };
	struct uvh_listener *l = (void *)1;
	char path[108];
	int before = t_count_fds();

	t_socket_path(path, sizeof(path), "badopt");
	cr_assert_eq(uvh_listener_open(path, &opts, &l), -EINVAL);
	cr_assert_null(l);
	opts.allow_uids = NULL;
	opts.n_allow_uids = 1;
	cr_assert_eq(uvh_listener_open(path, &opts, &l), -EINVAL);
	cr_assert_eq(access(path, F_OK), -1, "no socket file left behind");
	cr_assert_eq(t_count_fds(), before);
}

/* A peer of another uid, for real (needs root): a child that drops to
 * nobody and connects. */
static int connect_as(const char *path, uid_t uid)
{
	pid_t pid = fork();
	int st = 0;

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char b;
		int c;

		if (setresgid(uid, uid, uid) || setresuid(uid, uid, uid))
			_exit(10);
		c = uvh_connect(path, NULL);
		if (c < 0)
			_exit(11);
		/* 0: closed by the server at once; 1: served (it writes) */
		_exit(read(c, &b, 1) == 0 ? 0 : 1);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

struct accept_arg {
	struct uvh_listener *l;
	int fd;
};

static void *accept_and_greet(void *arg)
{
	struct accept_arg *a = arg;

	a->fd = uvh_listener_accept(a->l, 2000);
	if (a->fd >= 0 && write(a->fd, "x", 1) != 1) {
		close(a->fd);
		a->fd = -EIO;
	}
	return NULL;
}

Test(listener, allow_list_with_a_second_uid)
{
	const uid_t nobody = 65534;
	uid_t root_only = 0, both[2] = { 0, nobody };
	struct uvh_listener_opts opts = { .mode = 0666, .allow_uids = &root_only,
					  .n_allow_uids = 1 };
	struct accept_arg a;
	struct uvh_listener *l;
	pthread_t t;
	char path[108];
	int before = t_count_fds();

	if (getuid() != 0)
		cr_skip_test("needs root to connect as uid %u", nobody);
	t_log_capture();
	t_socket_path(path, sizeof(path), "uid2");
	cr_assert_eq(uvh_listener_open(path, &opts, &l), 0);
	a = (struct accept_arg){ .l = l };
	pthread_create(&t, NULL, accept_and_greet, &a);
	cr_assert_eq(connect_as(path, nobody), 0, "uid %u was turned away", nobody);
	pthread_join(t, NULL);
	cr_assert_eq(a.fd, -ETIMEDOUT);
	cr_assert(t_log_contains("uid 65534): uid not in the allow-list"));
	uvh_listener_close(l);

	opts.allow_uids = both;
	opts.n_allow_uids = 2;
	cr_assert_eq(uvh_listener_open(path, &opts, &l), 0);
	a = (struct accept_arg){ .l = l };
	pthread_create(&t, NULL, accept_and_greet, &a);
	cr_assert_eq(connect_as(path, nobody), 1, "listed uid %u is served", nobody);
	pthread_join(t, NULL);
	cr_assert_geq(a.fd, 0);
	close(a.fd);
	uvh_listener_close(l);
	cr_assert_eq(t_count_fds(), before);
	t_log_reset();
}

Test(listener, refuse_pending_closes_every_waiting_connection)
{
	struct uvh_listener *l;
	char path[108];
	int before = t_count_fds(), c[3], s;

	t_log_capture();
	t_socket_path(path, sizeof(path), "busy");
	cr_assert_eq(uvh_listener_open(path, NULL, &l), 0);
	cr_assert_eq(uvh_listener_refuse_pending(l, "port busy"), 0, "none waiting");
	for (int i = 0; i < 3; i++) {
		c[i] = uvh_connect(path, NULL);
		cr_assert_geq(c[i], 0);
	}
	cr_assert_eq(uvh_listener_refuse_pending(l, "port busy"), 3);
	for (int i = 0; i < 3; i++) {
		check_closed_by_server(c[i]);
		close(c[i]);
	}
	cr_assert_eq(uvh_listener_refused(l), 3);
	cr_assert(t_log_contains("port busy"));
	cr_assert_eq(uvh_listener_refuse_pending(NULL, "x"), -EINVAL);
	/* and the listener still accepts the next one */
	c[0] = uvh_connect(path, NULL);
	s = uvh_listener_accept(l, 1000);
	cr_assert_geq(s, 0);
	check_echo(c[0], s);
	close(c[0]);
	close(s);
	uvh_listener_close(l);
	cr_assert_eq(t_count_fds(), before);
	t_log_reset();
}

Test(listener, peer_credentials)
{
	pid_t pid = 0;
	uid_t uid = 1;
	gid_t gid = 1;
	int sv[2], p[2];
	uid_t list[2] = { 5, getuid() };

	t_socketpair(sv);
	cr_assert_eq(uvh_peer_cred(sv[0], &pid, &uid, &gid), 0);
	cr_assert_eq(pid, getpid());
	cr_assert_eq(uid, getuid());
	cr_assert_eq(gid, getgid());
	cr_assert_eq(uvh_peer_cred(sv[0], NULL, NULL, NULL), 0);
	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(uvh_peer_cred(p[0], &pid, &uid, &gid), -ENOTSOCK);
	cr_assert_eq(uvh_peer_cred(-1, NULL, NULL, NULL), -EBADF);
	cr_assert(uvh_uid_allowed(12345, NULL, 0), "an empty list allows everyone");
	cr_assert(uvh_uid_allowed(getuid(), list, 2));
	cr_assert_not(uvh_uid_allowed(getuid() + 1, list, 2));
	close(sv[0]);
	close(sv[1]);
	close(p[0]);
	close(p[1]);
}
