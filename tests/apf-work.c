// SPDX-License-Identifier: GPL-2.0
/*
 * apf-work: the L2 guest's workload for the async page fault checks and
 * benchmark, after the first x86 async PF posting's: "touchers" read
 * pages of a large array at random, "counters" only count, and the
 * total work in a fixed time is what counts.
 *
 * It fills the array (each 8-byte word of page p holds p * 512 + i, so
 * every page has a known checksum), says "apf-work: ready" on stdout
 * and works for -s seconds, printing each second what the touchers and
 * the counters did in it and when it looked (seconds since the start:
 * this thread's own faults can delay it).  Then it checks every word of
 * every page, prints the same per-second figures again as "apf-work:
 * sample" lines and one "apf-work: result" line.  With -q it prints
 * nothing while it works: the console is a virtio one that waits for
 * QEMU, and a QEMU squeezed into swap holds up the printing thread for
 * tens of seconds, so a benchmark's samples would come late.  In both
 * modes "apf-work: sampled" says the last second has been taken.  The
 * host side makes the array slow to reach while this runs (swap, or a
 * postcopy migration).
 *
 * usage: apf-work [-m MiB] [-s seconds] [-t touchers] [-c counters] [-q]
 * Exit 0 when every word read (during the run and in the final check)
 * was right, 1 on a wrong word, 2 on bad usage or no memory.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE		4096UL
#define WORDS		(PAGE / 8)
#define MAX_THREADS	16
#define MAX_SECONDS	3600

static uint64_t *array;
static uint64_t pages;
static volatile int stop;

struct worker {
	pthread_t thread;
	unsigned int seed;
	volatile uint64_t done;		/* pages checked, or counts */
	volatile uint64_t bad;
} __attribute__((aligned(64)));

static struct worker touchers[MAX_THREADS], counters[MAX_THREADS];

/* What each second's look found: work done in it, and when. */
static struct sample {
	uint64_t touched, counted;
	double at;
} samples[MAX_SECONDS + 1];

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One word per cache line of a random page, as a reader of data would. */
static void *toucher(void *arg)
{
	struct worker *w = arg;

	while (!stop) {
		uint64_t p = rand_r(&w->seed) % pages;
		uint64_t *page = array + p * WORDS;
		unsigned int i;

		for (i = 0; i < WORDS; i += 8)
			if (page[i] != p * WORDS + i)
				w->bad++;
		w->done++;
	}
	return NULL;
}

static void *counter(void *arg)
{
	struct worker *w = arg;
	uint64_t n = 0;

	while (!stop) {
		n++;
		if (!(n & 0xffff))
			w->done = n >> 16;
	}
	return NULL;
}

static uint64_t sum(struct worker *w, int n)
{
	uint64_t s = 0;
	int i;

	for (i = 0; i < n; i++)
		s += w[i].done;
	return s;
}

int main(int argc, char *argv[])
{
	int mib = 64, secs = 20, nt = 1, nc = 1, quiet = 0, opt, i, s;
	uint64_t p, bad = 0, t_prev = 0, c_prev = 0, t_all, c_all;
	double t0;

	while ((opt = getopt(argc, argv, "m:s:t:c:q")) != -1) {
		switch (opt) {
		case 'm': mib = atoi(optarg); break;
		case 's': secs = atoi(optarg); break;
		case 't': nt = atoi(optarg); break;
		case 'c': nc = atoi(optarg); break;
		case 'q': quiet = 1; break;
		default: goto usage;
		}
	}
	if (mib < 1 || secs < 1 || secs > MAX_SECONDS || nt < 1 || nt > MAX_THREADS || nc < 0 ||
	    nc > MAX_THREADS)
		goto usage;

	pages = (uint64_t)mib * (1 << 20) / PAGE;
	array = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (array == MAP_FAILED) {
		perror("apf-work: mmap");
		return 2;
	}
	t0 = now();
	for (p = 0; p < pages * WORDS; p++)
		array[p] = p;
	printf("apf-work: filled %d MiB (%lu pages) in %.1f s\n", mib,
	       (unsigned long)pages, now() - t0);
	printf("apf-work: ready, %d touchers, %d counters, %d s\n", nt, nc,
	       secs);
	fflush(stdout);

	for (i = 0; i < nt; i++) {
		touchers[i].seed = 1 + i;
		pthread_create(&touchers[i].thread, NULL, toucher, &touchers[i]);
	}
	for (i = 0; i < nc; i++)
		pthread_create(&counters[i].thread, NULL, counter, &counters[i]);

	t0 = now();
	for (s = 1; s <= secs; s++) {
		struct sample *x = &samples[s];
		uint64_t t, c;

		while (now() < t0 + s)
			usleep(20000);
		t = sum(touchers, nt);
		c = sum(counters, nc);
		x->at = now() - t0;
		x->touched = t - t_prev;
		x->counted = c - c_prev;
		if (!quiet) {
			printf("apf-work: t=%d touched %lu counted %lu at %.3f\n",
			       s, (unsigned long)x->touched,
			       (unsigned long)x->counted, x->at);
			fflush(stdout);
		}
		t_prev = t;
		c_prev = c;
	}
	stop = 1;
	/* Even with -q: the host side ends the slow phase on this line. */
	printf("apf-work: sampled %d s\n", secs);
	fflush(stdout);
	for (i = 0; i < nt; i++)
		pthread_join(touchers[i].thread, NULL);
	for (i = 0; i < nc; i++)
		pthread_join(counters[i].thread, NULL);
	t_all = sum(touchers, nt);
	c_all = sum(counters, nc);
	for (i = 0; i < nt; i++)
		bad += touchers[i].bad;

	/* Every word of every page, after the run. */
	for (p = 0; p < pages * WORDS; p++)
		if (array[p] != p)
			bad++;

	for (s = 1; s <= secs; s++)
		printf("apf-work: sample t=%d touched %lu counted %lu at %.3f\n",
		       s, (unsigned long)samples[s].touched,
		       (unsigned long)samples[s].counted, samples[s].at);
	printf("apf-work: result seconds %d touched %lu counted %lu bad %lu pages %lu\n",
	       secs, (unsigned long)t_all, (unsigned long)c_all,
	       (unsigned long)bad, (unsigned long)pages);
	fflush(stdout);
	return bad ? 1 : 0;

usage:
	fprintf(stderr, "usage: %s [-m MiB] [-s seconds 1-%d] [-t touchers 1-%d] [-c counters 0-%d] [-q]\n",
		argv[0], MAX_SECONDS, MAX_THREADS, MAX_THREADS);
	return 2;
}
