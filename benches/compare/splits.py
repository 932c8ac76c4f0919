"""peftc's seeded train / held-out split (runtime/src/data/mod.rs, rng.rs), reimplemented
so the Hugging Face baseline trains and evaluates on exactly the same examples."""

M = (1 << 64) - 1


def mix(x):
    x = (x + 0x9E3779B97F4A7C15) & M
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M
    return x ^ (x >> 31)


def key(parts):
    acc = 0x5EED
    for p in parts:
        acc = mix(acc ^ p)
    return acc


class Rng:
    def __init__(self, k):
        self.state = k

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M
        return mix(self.state)

    def shuffle(self, v):
        for i in range(len(v) - 1, 0, -1):
            j = self.next_u64() % (i + 1)
            v[i], v[j] = v[j], v[i]


def split(n, eval_fraction, seed):
    idx = list(range(n))
    Rng(key([seed, 0x5B11])).shuffle(idx)
    n_eval = round(n * eval_fraction)
    n_eval = min(max(n_eval, 1 if n > 1 else 0), max(n - 1, 0))
    return idx[n_eval:], idx[:n_eval]
