"""Summarize py-spy collapsed stacks: `python -m bench.profile_top FILE [N]` → top functions by self and total time."""

import collections
import sys


def main() -> int:
    path, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25
    self_c, tot_c = collections.Counter(), collections.Counter()
    total = 0
    for line in open(path):
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack:
            continue
        c = int(count)
        frames = stack.split(";")
        total += c
        self_c[frames[-1]] += c
        for f in set(frames):
            tot_c[f] += c
    print(f"{total} samples")
    print("-- self --")
    for f, c in self_c.most_common(n):
        print(f"{c / total * 100:5.1f}%  {f}")
    print("-- total (inclusive) --")
    for f, c in tot_c.most_common(n):
        print(f"{c / total * 100:5.1f}%  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
