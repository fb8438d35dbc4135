/* The reference for the data-parallel speed-ups (dist.py): what two C
 * processes get on this box, in the same run. `work primes LO HI` counts
 * the primes in [LO, HI) by trial division (the work of primes.fl);
 * `work hash LO HI ROUNDS` hashes words [LO, HI) of hash.fl's 2 MiB
 * array ROUNDS times (FNV-1a, as hash.fl). dist.py times the whole range
 * in one process against its two halves of equal work in two processes
 * at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_prime(long n)
{
	if (n < 2)
		return 0;
	for (long d = 2; d * d <= n; d++)
		if (n % d == 0)
			return 0;
	return 1;
}

#define WORDS 262144 /* hash.fl's 2 MiB */

static unsigned long hash(long lo, long hi, long rounds)
{
	unsigned long *a = malloc(WORDS * sizeof *a), h = 0;

	if (a == NULL)
		exit(70);
	for (long i = 0; i < WORDS; i++)
		a[i] = (unsigned long)i * 2654435761ul;
	for (long r = 0; r < rounds; r++)
		for (long i = lo; i < hi; i++)
			h = ((h ^ a[i]) * 1099511628211ul) & 0xfffffffffffful;
	free(a);
	return h;
}

int main(int argc, char **argv)
{
	long lo, hi, c = 0;

	if (argc == 5 && strcmp(argv[1], "hash") == 0) {
		lo = atol(argv[2]);
		hi = atol(argv[3]);
		if (lo < 0 || hi > WORDS || lo > hi)
			return 64;
		printf("%lu\n", hash(lo, hi, atol(argv[4])));
		return 0;
	}
	if (argc != 4 || strcmp(argv[1], "primes") != 0) {
		fprintf(stderr, "usage: work primes LO HI\n"
				"       work hash LO HI ROUNDS\n");
		return 64;
	}
	lo = atol(argv[2]);
	hi = atol(argv[3]);
	for (long i = lo; i < hi; i++)
		c += is_prime(i);
	printf("%ld\n", c);
	return 0;
}
