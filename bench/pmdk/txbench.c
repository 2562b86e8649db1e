/*
 * txbench: PMDK's side of the transaction anchors in DESIGN.md, to run on
 * the same machine in the same session as the Go benchmarks
 * (BenchmarkTxUpdateField, BenchmarkTxAllocLink in heap/bench_test.go).
 * Not built by CI. With Debian's libpmemobj-dev:
 *
 *   cc -O2 -o txbench bench/pmdk/txbench.c -lpmemobj
 *   ./txbench /dev/shm/pmdk.pool 200000                        # msync
 *   PMEM_IS_PMEM_FORCE=1 ./txbench /dev/shm/pmdk.pool 200000   # cache flushes
 *
 * It prints ns per transaction for a one-field update (TX_ADD_FIELD and a
 * store) and for allocating a 64-byte node and linking it at the head of a
 * list.
 */
#include <libpmemobj.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

POBJ_LAYOUT_BEGIN(txbench);
POBJ_LAYOUT_ROOT(txbench, struct root);
POBJ_LAYOUT_TOID(txbench, struct node);
POBJ_LAYOUT_END(txbench);

struct node {
	TOID(struct node) next;
	uint64_t v[6];
};

struct root {
	uint64_t n;
	TOID(struct node) head;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s POOL N\n", argv[0]);
		return 1;
	}
	long n = atol(argv[2]);
	unlink(argv[1]);
	PMEMobjpool *pop = pmemobj_create(argv[1], POBJ_LAYOUT_NAME(txbench), (size_t)256 << 20, 0600);
	if (pop == NULL) {
		perror("pmemobj_create");
		return 1;
	}
	TOID(struct root) root = POBJ_ROOT(pop, struct root);
	printf("pmem_is_pmem-like mode: %s\n", getenv("PMEM_IS_PMEM_FORCE") ? getenv("PMEM_IS_PMEM_FORCE") : "0");

	double t0 = now();
	for (long i = 0; i < n; i++) {
		TX_BEGIN(pop) {
			TX_ADD_FIELD(root, n);
			D_RW(root)->n++;
		} TX_END
	}
	printf("update one field: %.0f ns/tx\n", (now() - t0) / n);

	t0 = now();
	for (long i = 0; i < n; i++) {
		TX_BEGIN(pop) {
			TOID(struct node) nd = TX_NEW(struct node);
			D_RW(nd)->next = D_RO(root)->head;
			D_RW(nd)->v[0] = i;
			TX_ADD_FIELD(root, head);
			D_RW(root)->head = nd;
		} TX_END
	}
	printf("alloc and link a node: %.0f ns/tx\n", (now() - t0) / n);
	pmemobj_close(pop);
	unlink(argv[1]);
	return 0;
}
