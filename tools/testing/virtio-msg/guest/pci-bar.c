// SPDX-License-Identifier: GPL-2.0
/*
 * pci-bar [-n COUNT] FILE OFFSET [VALUE]: reads (prints 0x%08x) or writes
 * one 32-bit word at OFFSET of a PCI memory BAR, through its sysfs resource
 * file (/sys/bus/pci/devices/D/resourceN), which can only be mmap()ed. The
 * test guest's kernel has no /dev/mem (CONFIG_DEVMEM is off), so busybox
 * devmem cannot do this. Built statically into the test initramfs by
 * mkinitramfs.sh.
 *
 * With -n, the access is made COUNT times and the mean time of one is
 * printed, in nanoseconds: what an access to that BAR costs (make bench
 * measures the device's share of the driver's time with it).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int usage(void)
{
	fprintf(stderr, "usage: pci-bar [-n COUNT] FILE OFFSET [VALUE]\n");
	return 2;
}

static int number(const char *s, unsigned long long *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 0);
	return errno || !*s || *end ? -1 : 0;
}

static unsigned long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	unsigned long long offset, value = 0, count = 0, i, start;
	volatile uint32_t *word;
	struct stat st;
	void *map;
	int fd;

	if (argc > 2 && !strcmp(argv[1], "-n")) {
		if (number(argv[2], &count) || !count)
			return usage();
		argc -= 2;
		argv += 2;
	}
	if (argc < 3 || argc > 4 || number(argv[2], &offset) ||
	    (argc == 4 && number(argv[3], &value)) || value > UINT32_MAX)
		return usage();
	fd = open(argv[1], argc == 4 ? O_RDWR : O_RDONLY);
	if (fd < 0 || fstat(fd, &st)) {
		fprintf(stderr, "pci-bar: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	if (offset % 4 || offset + 4 > (unsigned long long)st.st_size) {
		fprintf(stderr, "pci-bar: offset %#llx outside %s (%lld bytes) or unaligned\n",
			offset, argv[1], (long long)st.st_size);
		return 1;
	}
	map = mmap(NULL, st.st_size, argc == 4 ? PROT_READ | PROT_WRITE : PROT_READ,
		   MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		fprintf(stderr, "pci-bar: mmap %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	word = (volatile uint32_t *)((char *)map + offset);
	if (count) {
		start = now_ns();
		for (i = 0; i < count; i++) {
			if (argc == 4)
				*word = (uint32_t)value;
			else
				(void)*word; /* volatile: every read is made */
		}
		printf("%llu\n", (now_ns() - start) / count);
	} else if (argc == 4) {
		*word = (uint32_t)value;
	} else {
		printf("0x%08x\n", *word);
	}
	munmap(map, st.st_size);
	close(fd);
	return 0;
}
