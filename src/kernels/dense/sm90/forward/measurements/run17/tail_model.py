#!/usr/bin/env python3
"""Run 17's model of the persistent scheduler's tail under a causal mask (NOTES.md, run 17).

132 SMs take work tiles in the order of ForwardTileScheduler::work from a shared counter, each SM the
next one as it finishes (list scheduling). A tile costs its key tiles plus a fixed cost c per work tile
(ncu, run 14: ~1.9 key tiles' worth at S = 1024). Printed: the launch's length over the ideal (total
cost / 132) for the head-by-head order (heavy first within a head) and for sections of (batch, head)
pairs whose K/V fit in 8, 16 and 32 MiB (the kernel's order since run 17, with 32 MiB). Also checks
that the section order visits every (m_block, pair) once, as the kernel's decode must.
"""
import heapq

SMS = 132
FIXED = 1.9


def makespan(costs):
    free = [0.0] * SMS
    heapq.heapify(free)
    for c in costs:
        heapq.heappush(free, heapq.heappop(free) + c)
    return max(free)


def section_order(num_m, pairs, section):
    """The kernel's decode (heavy_first): linear -> (m_block, pair)."""
    out = []
    for linear in range(num_m * pairs):
        s = linear // (num_m * section)
        first = s * section
        here = min(section, pairs - first)
        within = linear - s * num_m * section
        out.append((num_m - 1 - within // here, first + within % here))
    return out


def main():
    for num_m, pairs, section in ((6, 7, 3), (5, 10, 4), (8, 3, 8), (1, 9, 2)):
        order = section_order(num_m, pairs, section)
        assert sorted(order) == [(m, p) for m in range(num_m) for p in range(pairs)], (num_m, pairs, section)
    print("D S | head by head | sections of 8 / 16 / 32 MiB")
    for d in (64, 128, 256):
        block_m = 192 if d == 64 else 128
        block_n = {64: 128, 128: 128, 256: 80}[d]
        for s in (1024, 2048, 4096, 8192, 16384):
            pairs = (16384 // s) * (2048 // d)
            num_m = -(-s // block_m)

            def cost(m):
                return -(-min(s, (m + 1) * block_m) // block_n) + FIXED

            ideal = sum(cost(m) for m in range(num_m)) * pairs / SMS
            row = [makespan([cost(m) for _ in range(pairs) for m in reversed(range(num_m))]) / ideal]
            for mib in (8, 16, 32):
                section = max(1, (mib << 20) // (s * 2 * d * 2))
                row.append(makespan([cost(m) for m, _ in section_order(num_m, pairs, section)]) / ideal)
            print(d, s, "|", " ".join(f"{x:.3f}" for x in row))


if __name__ == "__main__":
    main()
