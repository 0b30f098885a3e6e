#include "bench/requests.h"

#include <algorithm>
#include <memory>
#include <utility>

namespace kvstash::bench {

Result<Run> RunOne(Scheduler& scheduler, GenerationRequest request) {
  KV_ASSIGN_OR_RETURN(std::shared_ptr<RequestHandle> h,
                      scheduler.Submit(std::move(request)));
  Run run;
  run.submitted = h->submitted();
  RequestEvent ev;
  while (h->Next(&ev, std::chrono::minutes(10))) {
    if (ev.kind == RequestEvent::Kind::kToken) {
      run.token_times.push_back(ev.time);
      continue;
    }
    if (ev.finish == RequestEnd::kError) return ev.error;
    if (run.token_times.empty()) {
      return Status::Internal("bench: a request ended without a token");
    }
    run.finish = ev;
    return run;
  }
  return Status::Internal("bench: a request did not finish in 10 minutes");
}

Prompts::Prompts(const Model& model, uint64_t seed)
    : rng_(seed),
      vocab_(model.config().vocab_size),
      bos_(model.tokenizer().bos()) {}

std::vector<int32_t> Prompts::Random(int n) {
  std::vector<int32_t> p;
  if (bos_ >= 0) p.push_back(bos_);
  std::uniform_int_distribution<int32_t> id(0, vocab_ - 1);
  while (int(p.size()) < n) p.push_back(id(rng_));
  return p;
}

GenerationRequest Greedy(std::vector<int32_t> prompt, int max_tokens) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  r.stop_at_eos = false;
  return r;
}

double AggregateDecodeRate(const std::vector<Run>& runs) {
  Clock::time_point begin = runs[0].token_times.front();
  Clock::time_point end = runs[0].token_times.back();
  for (const Run& r : runs) {
    begin = std::max(begin, r.token_times.front());
    end = std::min(end, r.token_times.back());
  }
  size_t tokens = 0;
  for (const Run& r : runs) {
    for (Clock::time_point t : r.token_times) tokens += t > begin && t <= end;
  }
  const double s = Seconds(begin, end);
  return s > 0 ? tokens / s : 0;
}

}  // namespace kvstash::bench
