#!/usr/bin/env python3
"""Run 18: run 17's tail model (measurements/run17/tail_model.py) with the first pairs head by head and the
last k pairs as one section, query tile by query tile (ForwardTileScheduler since run 18). Prints the
launch's length over the ideal for k = 1 (head by head) .. all pairs (one section), S = 1024 and 2048."""
import heapq
SMS=132; FIXED=1.9
def makespan(costs):
    free=[0.0]*SMS; heapq.heapify(free)
    for c in costs: heapq.heappush(free, heapq.heappop(free)+c)
    return max(free)
def order(num_m,pairs,hbh,section):
    out=[]
    for p in range(hbh):
        for m in reversed(range(num_m)): out.append((m,p))
    rest=pairs-hbh; linear=0
    for l in range(num_m*rest):
        s=l//(num_m*section); first=s*section; here=min(section,rest-first); within=l-s*num_m*section
        out.append((num_m-1-within//here, hbh+first+within%here))
    assert sorted(out)==[(m,p) for m in range(num_m) for p in range(pairs)]
    return out
for d in (64,128,256):
    block_m=192 if d==64 else 128; block_n={64:128,128:128,256:80}[d]
    for s in (1024,2048):
        pairs=(16384//s)*(2048//d); num_m=-(-s//block_m)
        def cost(m): return -(-min(s,(m+1)*block_m)//block_n)+FIXED
        ideal=sum(cost(m) for m in range(num_m))*pairs/SMS
        row=[]
        for k in (1,8,16,24,32,33,44,48,64,pairs):
            k=min(k,pairs)
            row.append(f"k={k}:{makespan([cost(m) for m,_ in order(num_m,pairs,pairs-k,k)])/ideal:.3f}")
        print(d,s,pairs,num_m," ".join(row))
