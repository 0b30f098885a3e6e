// PipelinedGetProbe: how fast a Redis server hands values to one client, the
// baseline that a benchmark compares the Redis tier's restore throughput
// with. It writes `count` scratch values of `value_bytes` bytes, times
// reading them all back with pipelined GETs (awaiting at most 1 MiB of
// values and kRedisPipelineDepth replies: a deeper pipeline of large values
// slows the server, see redis_probe.cc), then deletes them.
//
// The probe speaks to Redis through plain blocking hiredis, independently of
// the tier's code, so that it measures Redis and the network rather than the
// tier; the timed GETs' replies are received from the socket and skipped
// (their length checked), so the kernel's copy is all the client does to a
// value. Its keys, "kvstash:probe:{<pid>-<time>}:<i>", share one hash tag:
// on a cluster they live in one slot, and the probe measures the one master
// that serves it (it follows the -MOVED from the first seed that answers).
// With credentials in the URL, it sends AUTH on each connection (to the
// redirected node too: the probe trusts the Redis it measures).
// Leaves nothing behind unless the process dies mid-probe. Thread-safe.
#pragma once

#include <cstddef>
#include <string>

#include "base/status.h"

namespace kvstash::store {

// Bytes per second of the timed GETs. InvalidArgument for a bad URL or a
// count or size of 0; IOError naming the server when Redis fails or refuses
// (a full Redis, for example).
Result<double> PipelinedGetProbe(const std::string& url, size_t value_bytes,
                                 int count);

}  // namespace kvstash::store
