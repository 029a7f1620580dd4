"""Expected `z` of lane_patterns.kir and lane_patterns_wave64.kir, from
Python's integers: the kernel's arithmetic on x = iota, thread by thread."""
n = 60
z = []
for t in range(64):
    if t < n:
        warp32, lane32, half = t // 32, t % 32, (t // 16) % 2
        z.append((warp32 * 64 + lane32 * 2) + (half + 128) * 1000 + (warp32 + 140) * 100000)
    else:
        z.append(0)
print("// expect z: " + ", ".join(str(v) for v in z))
