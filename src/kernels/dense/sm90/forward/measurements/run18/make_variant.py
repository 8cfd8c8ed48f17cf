#!/usr/bin/env python3
"""Writes a host variant of forward_host_sm90.cu (run 18 measurement only, not committed).
   hbh: heads of <= 8 query tiles all head by head (7666c6a's order)
   cap16: the tail capped at 16 MiB of K/V
   sec16: sections of 16 MiB everywhere at <= 8 query tiles (the sm80 forward's order)"""
import sys
path, variant = sys.argv[1], sys.argv[2]
s = open(path).read()
old = """      const std::int64_t tail =
          std::min<std::int64_t>(pairs, (std::int64_t{kTailWaves} * sm_count + p.num_m_blocks - 1) / p.num_m_blocks);
      p.head_by_head_pairs = static_cast<int>(pairs - tail);
      p.section_heads = static_cast<int>(std::max<std::int64_t>(1, tail));"""
assert old in s
if variant == "hbh":
    new = """      p.head_by_head_pairs = static_cast<int>(pairs);
      p.section_heads = 1;"""
elif variant == "cap16":
    new = """      const std::int64_t tail = std::min<std::int64_t>(
          {pairs, (std::int64_t{kTailWaves} * sm_count + p.num_m_blocks - 1) / p.num_m_blocks,
           std::max<std::int64_t>(1, (std::int64_t{16} << 20) / kv_head_bytes) * problem.group});
      p.head_by_head_pairs = static_cast<int>(pairs - tail);
      p.section_heads = static_cast<int>(std::max<std::int64_t>(1, tail));"""
elif variant == "sec16":
    new = """      p.head_by_head_pairs = 0;
      p.section_heads = static_cast<int>(std::min<std::int64_t>(
          pairs, std::max<std::int64_t>(1, (std::int64_t{16} << 20) / kv_head_bytes) * problem.group));"""
else:
    raise SystemExit("unknown variant")
open(path, "w").write(s.replace(old, new))
