// SPDX-License-Identifier: GPL-2.0
/*
 * vmsg-io: the I/O generator of "make bench" (busybox has no fio). Built
 * statically into the test initramfs by mkinitramfs.sh.
 *
 *   vmsg-io rand [-d] [-b BYTES] [-q DEPTH] [-t SECONDS] FILE
 *	random aligned reads of BYTES (default 4096) over the whole of FILE (a
 *	block device or a file), O_DIRECT with -d; DEPTH (default 1) threads
 *	each keep one read in flight, so DEPTH is the queue depth.
 *   vmsg-io seq [-b BYTES] [-t SECONDS] FILE
 *	read() of BYTES at a time from FILE, one after the other (a character
 *	device such as /dev/hwrng).
 *   vmsg-io tcp-send [-b BYTES] [-t SECONDS] ADDR PORT
 *	connect to ADDR:PORT and send for SECONDS, then shut down the sending
 *	side and wait for the peer's answer: the number of bytes it received,
 *	in decimal. That count is what is reported, and the time includes the
 *	wait, so data still in flight when the clock stops does not count.
 *   vmsg-io tcp-recv [-b BYTES] [-t SECONDS] ADDR PORT
 *	connect to ADDR:PORT and receive what the peer sends for SECONDS.
 *
 * Prints one line: "ops=N bytes=N usec=N" (ops: completed reads or send/recv
 * calls; usec: the elapsed time measured). Exit status 1 on an I/O error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 64

static atomic_int stop;

struct worker {
	pthread_t thread;
	int fd;
	size_t bs;
	uint64_t blocks;	/* of bs bytes in the file */
	uint64_t seed;
	uint64_t ops;
	int err;
};

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* xorshift64*: good enough to spread offsets, and each thread has its own. */
static uint64_t next_random(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

static void *rand_reader(void *arg)
{
	struct worker *w = arg;
	void *buf;

	if (posix_memalign(&buf, 4096, w->bs)) {
		w->err = ENOMEM;
		return NULL;
	}
	while (!stop) {
		off_t off = (off_t)(next_random(&w->seed) % w->blocks) * w->bs;
		ssize_t n = pread(w->fd, buf, w->bs, off);

		if (n != (ssize_t)w->bs) {
			w->err = n < 0 ? errno : EIO;
			break;
		}
		w->ops++;
	}
	free(buf);
	return NULL;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: vmsg-io rand [-d] [-b BYTES] [-q DEPTH] [-t SECONDS] FILE\n"
		"       vmsg-io seq [-b BYTES] [-t SECONDS] FILE\n"
		"       vmsg-io tcp-send|tcp-recv [-b BYTES] [-t SECONDS] ADDR PORT\n");
	return 2;
}

static int positive(const char *s, unsigned long max, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(s, &end, 0);
	return errno || !*s || *end || *out == 0 || *out > max ? -1 : 0;
}

static void report(uint64_t ops, uint64_t bytes, uint64_t usec)
{
	printf("ops=%llu bytes=%llu usec=%llu\n", (unsigned long long)ops,
	       (unsigned long long)bytes, (unsigned long long)usec);
}

static int run_rand(const char *path, int direct, size_t bs, unsigned depth, unsigned secs)
{
	struct worker w[MAX_DEPTH];
	uint64_t size, start, ops = 0;
	struct stat st;
	unsigned i, started = 0;
	int fd, err = 0;

	fd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
	if (fd < 0 || fstat(fd, &st)) {
		fprintf(stderr, "vmsg-io: %s: %s\n", path, strerror(errno));
		return 1;
	}
	size = st.st_size;
	if (S_ISBLK(st.st_mode) && ioctl(fd, BLKGETSIZE64, &size)) {
		fprintf(stderr, "vmsg-io: %s: BLKGETSIZE64: %s\n", path, strerror(errno));
		return 1;
	}
	if (size < bs) {
		fprintf(stderr, "vmsg-io: %s: smaller than one read\n", path);
		return 1;
	}
	start = now_usec();
	for (i = 0; i < depth; i++) {
		w[i] = (struct worker){ .fd = fd, .bs = bs, .blocks = size / bs,
					.seed = (start + 1) * 0x9e3779b97f4a7c15ULL + i * 7919 + 1 };
		if (pthread_create(&w[i].thread, NULL, rand_reader, &w[i])) {
			fprintf(stderr, "vmsg-io: cannot start thread %u\n", i);
			stop = 1;
			err = 1;
			break;
		}
		started++;
	}
	while (!stop && now_usec() - start < (uint64_t)secs * 1000000)
		usleep(10000);
	stop = 1;
	for (i = 0; i < started; i++) {
		pthread_join(w[i].thread, NULL);
		ops += w[i].ops;
		if (w[i].err && !err) {
			fprintf(stderr, "vmsg-io: %s: read: %s\n", path, strerror(w[i].err));
			err = 1;
		}
	}
	report(ops, ops * bs, now_usec() - start);
	close(fd);
	return err;
}

static int run_seq(const char *path, size_t bs, unsigned secs)
{
	uint64_t start, ops = 0, bytes = 0;
	char *buf = malloc(bs);
	int fd = open(path, O_RDONLY);

	if (fd < 0 || !buf) {
		fprintf(stderr, "vmsg-io: %s: %s\n", path, strerror(errno));
		return 1;
	}
	start = now_usec();
	while (now_usec() - start < (uint64_t)secs * 1000000) {
		ssize_t n = read(fd, buf, bs);

		if (n <= 0) {
			fprintf(stderr, "vmsg-io: %s: read: %s\n", path,
				n < 0 ? strerror(errno) : "end of file");
			return 1;
		}
		ops++;
		bytes += n;
	}
	report(ops, bytes, now_usec() - start);
	free(buf);
	close(fd);
	return 0;
}

static int run_tcp(int send_mode, const char *addr, const char *port, size_t bs, unsigned secs)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	uint64_t start, ops = 0, bytes = 0;
	unsigned long p;
	char *buf = calloc(1, bs);
	int fd;

	if (!buf || positive(port, 65535, &p) || inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		return usage();
	sa.sin_port = htons(p);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		fprintf(stderr, "vmsg-io: connect %s:%s: %s\n", addr, port, strerror(errno));
		return 1;
	}
	start = now_usec();
	while (now_usec() - start < (uint64_t)secs * 1000000) {
		ssize_t n = send_mode ? send(fd, buf, bs, MSG_NOSIGNAL) : recv(fd, buf, bs, 0);

		if (n <= 0) {
			fprintf(stderr, "vmsg-io: %s: %s\n", send_mode ? "send" : "recv",
				n < 0 ? strerror(errno) : "connection closed");
			return 1;
		}
		ops++;
		bytes += n;
	}
	if (send_mode) {
		/* What arrived, as the peer counts it once it has seen the end. */
		char answer[32];
		size_t got = 0;
		ssize_t n;

		shutdown(fd, SHUT_WR);
		while (got < sizeof(answer) - 1 &&
		       (n = recv(fd, answer + got, sizeof(answer) - 1 - got, 0)) > 0)
			got += n;
		answer[got] = 0;
		if (!got) {
			fprintf(stderr, "vmsg-io: the peer did not say how much it received\n");
			return 1;
		}
		bytes = strtoull(answer, NULL, 10);
	}
	report(ops, bytes, now_usec() - start);
	close(fd);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long bs = 4096, depth = 1, secs = 3;
	const char *mode;
	int direct = 0, opt;

	if (argc < 2)
		return usage();
	mode = argv[1];
	argv++;
	argc--;
	while ((opt = getopt(argc, argv, "db:q:t:")) != -1) {
		switch (opt) {
		case 'd':
			direct = 1;
			break;
		case 'b':
			if (positive(optarg, 1 << 24, &bs))
				return usage();
			break;
		case 'q':
			if (positive(optarg, MAX_DEPTH, &depth))
				return usage();
			break;
		case 't':
			if (positive(optarg, 3600, &secs))
				return usage();
			break;
		default:
			return usage();
		}
	}
	if (!strcmp(mode, "rand") && optind == argc - 1)
		return run_rand(argv[optind], direct, bs, depth, secs);
	if (!strcmp(mode, "seq") && optind == argc - 1)
		return run_seq(argv[optind], bs, secs);
	if (!strcmp(mode, "tcp-send") && optind == argc - 2)
		return run_tcp(1, argv[optind], argv[optind + 1], bs, secs);
	if (!strcmp(mode, "tcp-recv") && optind == argc - 2)
		return run_tcp(0, argv[optind], argv[optind + 1], bs, secs);
	return usage();
}
