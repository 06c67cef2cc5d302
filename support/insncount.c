// SPDX-License-Identifier: GPL-2.0
/*
 * insncount: a TCG plugin for QEMU that counts the guest kernel's
 * instructions, per translation block, while the host says so.
 *
 * Time measured in a TCG guest varies by tens of percent between runs on a
 * busy host; the instructions a request executes hardly vary at all. make
 * bench loads this plugin (-plugin insncount.so,ctl=FIFO,out=FILE) and
 * support/sampling.py writes "start NAME" and "stop NAME" lines into the
 * named pipe FIFO around each sampled run; at "stop" the plugin appends
 * "NAME ADDRESS INSTRUCTIONS" to FILE for every kernel block that ran since
 * "start" (a block's address and the instructions executed in it, which
 * bench.py names with System.map and the modules' symbols), then "NAME end".
 *
 * Between runs the count costs one compare per block executed: each block's
 * callback is conditional on a per-vCPU flag (a scoreboard entry), which the
 * control thread sets and clears. User space is not instrumented.
 *
 * The declarations below are the part of QEMU's plugin interface (API
 * version 7, where every callback takes user data: QEMU 11.1) this file
 * uses.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_scoreboard;
typedef struct {
	struct qemu_plugin_scoreboard *score;
	size_t offset;
} qemu_plugin_u64;
typedef struct {
	const char *target_name;
	struct {
		int min;
		int cur;
	} version;
	bool system_emulation;
	struct {
		int smp_vcpus;
		int max_vcpus;
	} system;
} qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
enum qemu_plugin_cond {
	QEMU_PLUGIN_COND_NEVER,
	QEMU_PLUGIN_COND_ALWAYS,
	QEMU_PLUGIN_COND_EQ,
	QEMU_PLUGIN_COND_NE,
};
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(struct qemu_plugin_tb *tb,
					       void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index,
					    void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
					   qemu_plugin_vcpu_tb_trans_cb_t cb,
					   void *userdata);
void qemu_plugin_register_vcpu_tb_exec_cond_cb(struct qemu_plugin_tb *tb,
					       qemu_plugin_vcpu_udata_cb_t cb,
					       enum qemu_plugin_cb_flags flags,
					       enum qemu_plugin_cond cond,
					       qemu_plugin_u64 entry,
					       uint64_t imm, void *userdata);
size_t qemu_plugin_tb_n_insns(struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_scoreboard *qemu_plugin_scoreboard_new(size_t element_size);
void *qemu_plugin_scoreboard_find(struct qemu_plugin_scoreboard *score,
				  unsigned int vcpu_index);
int qemu_plugin_num_vcpus(void);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 7;

/* Where the x86-64 kernel's addresses start. */
#define KERNEL_START 0xffff800000000000ULL

/*
 * One translation of one block; a block translated again has two. Kept for
 * as long as QEMU runs: a few tens of bytes per translation, for a benchmark
 * of minutes.
 */
struct block {
	uint64_t vaddr;
	uint64_t insns;
	uint64_t runs; /* since the last "start" */
	struct block *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct block *blocks; /* under lock */
static struct qemu_plugin_scoreboard *armed; /* one uint64_t per vCPU */
static const char *ctl_path, *out_path;

static void block_ran(unsigned int vcpu, void *userdata)
{
	struct block *b = userdata;

	__atomic_fetch_add(&b->runs, 1, __ATOMIC_RELAXED);
}

static void translated(struct qemu_plugin_tb *tb, void *userdata)
{
	uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
	qemu_plugin_u64 flag = { armed, 0 };
	struct block *b;

	if (vaddr < KERNEL_START)
		return;
	b = calloc(1, sizeof(*b));
	if (!b)
		return;
	b->vaddr = vaddr;
	b->insns = qemu_plugin_tb_n_insns(tb);
	pthread_mutex_lock(&lock);
	b->next = blocks;
	blocks = b;
	pthread_mutex_unlock(&lock);
	qemu_plugin_register_vcpu_tb_exec_cond_cb(tb, block_ran,
						  QEMU_PLUGIN_CB_NO_REGS,
						  QEMU_PLUGIN_COND_NE, flag, 0,
						  b);
}

/* The vCPUs started by now: every one, once the guest runs. */
static void arm(uint64_t on)
{
	int vcpus = qemu_plugin_num_vcpus();

	for (int i = 0; i < vcpus; i++) {
		uint64_t *flag = qemu_plugin_scoreboard_find(armed, i);

		__atomic_store_n(flag, on, __ATOMIC_RELAXED);
	}
}

static void start(void)
{
	pthread_mutex_lock(&lock);
	for (struct block *b = blocks; b; b = b->next)
		__atomic_store_n(&b->runs, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&lock);
	arm(1);
}

static void stop(const char *name)
{
	FILE *out;

	arm(0);
	out = fopen(out_path, "a");
	if (!out) {
		qemu_plugin_outs("insncount: cannot open the output file\n");
		return;
	}
	pthread_mutex_lock(&lock);
	for (struct block *b = blocks; b; b = b->next) {
		uint64_t runs = __atomic_load_n(&b->runs, __ATOMIC_RELAXED);

		if (runs)
			fprintf(out, "%s %" PRIx64 " %" PRIu64 "\n", name,
				b->vaddr, runs * b->insns);
	}
	pthread_mutex_unlock(&lock);
	fprintf(out, "%s end\n", name);
	fclose(out);
}

/* One line of the control pipe. */
static void command(const char *line)
{
	char name[200];

	if (sscanf(line, "start %199s", name) == 1)
		start();
	else if (sscanf(line, "stop %199s", name) == 1)
		stop(name);
}

/*
 * Reads "start NAME" / "stop NAME" lines for as long as QEMU runs. The pipe
 * is opened for writing too, so that it never reads end-of-file and is never
 * without a reader when a writer opens it. Plain read(), not stdio: QEMU's
 * exit() flushes every stdio stream, and would wait for ever for the lock
 * of one this thread is blocked reading.
 */
static void *control(void *unused)
{
	char buf[512];
	size_t len = 0;
	int fd = open(ctl_path, O_RDWR);

	if (fd < 0) {
		qemu_plugin_outs("insncount: cannot open the control pipe\n");
		return NULL;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		char *line, *end;

		if (n <= 0)
			break;
		len += n;
		buf[len] = '\0';
		line = buf;
		while ((end = strchr(line, '\n'))) {
			*end = '\0';
			command(line);
			line = end + 1;
		}
		len -= line - buf;
		memmove(buf, line, len);
		if (len == sizeof(buf) - 1)
			len = 0; /* a line too long for any command */
	}
	close(fd);
	return NULL;
}

__attribute__((visibility("default"))) int
qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
		    char **argv)
{
	pthread_t thread;

	for (int i = 0; i < argc; i++) {
		if (!strncmp(argv[i], "ctl=", 4))
			ctl_path = argv[i] + 4;
		else if (!strncmp(argv[i], "out=", 4))
			out_path = argv[i] + 4;
	}
	if (!ctl_path || !out_path || !info->system_emulation) {
		qemu_plugin_outs("insncount: needs ctl=FIFO,out=FILE, system emulation\n");
		return -1;
	}
	armed = qemu_plugin_scoreboard_new(sizeof(uint64_t));
	if (!armed || pthread_create(&thread, NULL, control, NULL))
		return -1;
	pthread_detach(thread);
	qemu_plugin_register_vcpu_tb_trans_cb(id, translated, NULL);
	return 0;
}
