/* rng: a small deterministic generator (xoshiro256**, seeded by splitmix64).
 * Its whole state is four words, so checkpoints can store it and a resumed
 * run draws exactly the numbers an unbroken run would. */
#ifndef ALIGN_RNG_H
#define ALIGN_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} Rng;

void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
/* Uniform in [0, 1). */
double rng_uniform(Rng *r);
/* Standard normal (Box-Muller). */
double rng_normal(Rng *r);
/* Uniform integer in [0, n). */
uint64_t rng_below(Rng *r, uint64_t n);

#endif
