/* The reference for the data-parallel speed-ups (dist.py): what two C
 * processes get on this box, in the same run. `work primes LO HI` counts
 * the primes in [LO, HI) by trial division (the work of primes.fl);
 * dist.py times the whole range in one process against its two halves
 * of equal work in two processes at once. */
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

int main(int argc, char **argv)
{
	long lo, hi, c = 0;

	if (argc != 4 || strcmp(argv[1], "primes") != 0) {
		fprintf(stderr, "usage: work primes LO HI\n");
		return 64;
	}
	lo = atol(argv[2]);
	hi = atol(argv[3]);
	for (long i = lo; i < hi; i++)
		c += is_prime(i);
	printf("%ld\n", c);
	return 0;
}
