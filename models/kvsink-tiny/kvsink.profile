# kvsink sink profile (kvsinkd.conf(5), PROFILES)
model = kvsink-tiny-4fcdc782
layer = 4
channels = 187
tau = 68.4853973
max_sinks = 16
pfn = 1
