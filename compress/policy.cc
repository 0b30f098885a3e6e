#include "compress/policy.h"

#include <algorithm>
#include <array>
#include <charconv>

#include "compress/policies.h"
#include "compress/query_window.h"

namespace kvstash::compress {
namespace {

constexpr int kSinks = 4;
constexpr int kMaxWindow = 64;

enum class Kind {
  kStreaming,
  kKnorm,
  kH2o,
  kTova,
  kSnapkv,
  kExpected,
  kPyramid,
  kCake,
  kAdaKv,
  kLaCache,
};

struct Def {
  PolicyInfo info;
  Kind kind;
};

constexpr std::array<Def, 10> kDefs = {{
    {{"streaming", "StreamingLLM: 4 sink tokens and the most recent ones", true,
      false},
     Kind::kStreaming},
    {{"knorm", "keys of smallest L2 norm (KnormPress)", true, false},
     Kind::kKnorm},
    {{"h2o",
      "H2O: attention accumulated over the whole prompt, half the budget "
      "for the recent tokens",
      false, true},
     Kind::kH2o},
    {{"tova", "TOVA: the last query's attention", false, true}, Kind::kTova},
    {{"snapkv",
      "SnapKV: the observation window's pooled attention, window kept", false,
      true},
     Kind::kSnapkv},
    {{"expected",
      "ExpectedAttention (kvpress): attention of modelled future queries "
      "times |v|, 4 sinks",
      true, false},
     Kind::kExpected},
    {{"pyramid",
      "PyramidKV: SnapKV scores, budgets shrinking linearly across layers",
      false, true},
     Kind::kPyramid},
    {{"cake",
      "CAKE: SnapKV scores, layer budgets by attention entropy x variance",
      false, true},
     Kind::kCake},
    {{"adakv",
      "Ada-KV: SnapKV scores, each layer's budget split across heads by "
      "score, floor 0.2",
      false, true},
     Kind::kAdaKv},
    {{"lacache",
      "LaCache: 4 sinks, a quarter recent, and a span of the middle that "
      "ladders from oldest (first layer) to newest (last layer)",
      true, false},
     Kind::kLaCache},
}};

const Def* FindDef(std::string_view name) {
  for (const Def& d : kDefs) {
    if (d.info.name == name) return &d;
  }
  return nullptr;
}

// Queries the QueryWindow keeps: none (-1), all (0), or the last k.
int Capture(Kind kind) {
  switch (kind) {
    case Kind::kStreaming:
    case Kind::kKnorm:
    case Kind::kLaCache:
      return -1;
    case Kind::kH2o:
      return 0;
    case Kind::kTova:
      return 1;
    default:
      return kMaxWindow;
  }
}

bool MassScores(Kind kind) {
  return kind != Kind::kStreaming && kind != Kind::kKnorm &&
         kind != Kind::kLaCache;
}

class PolicyCompressor final : public KvCompressor {
 public:
  PolicyCompressor(const ModelConfig& config, const Def& def,
                   const PolicyOptions& options, ThreadPool* pool)
      : config_(config),
        pool_(pool),
        def_(def),
        options_(options),
        window_(config.n_layers, config.q_dim(),
                std::max(0, Capture(def.kind))) {}

  void Reset() override { window_.Clear(); }

  QueryObserver* observer() override {
    return Capture(def_.kind) < 0 ? nullptr : &window_;
  }

  int observed_tail() const override {
    const int capture = Capture(def_.kind);
    return capture < 0 ? 0 : capture == 0 ? -1 : capture;
  }

  bool prefix_only() const override { return def_.info.query_agnostic; }

  int MaxRowsKept(int n) const override {
    // Budgets moved across layers or heads can reach every row.
    if (def_.kind == Kind::kPyramid || def_.kind == Kind::kCake ||
        def_.kind == Kind::kAdaKv) {
      return n;
    }
    return KeptRows(n, options_.ratio);
  }

  int every() const override { return options_.every; }

  Status Compress(CompactableKv& kv, int n) override {
    return Run(kv, n, nullptr);
  }

  Status Recompress(CompactableKv& kv, int n,
                    std::span<const int32_t> budgets) override {
    const std::vector<int> fixed(budgets.begin(), budgets.end());
    if (fixed.size() != size_t(config_.n_layers * config_.n_kv_heads)) {
      return Status::InvalidArgument("kv policy " + options_.policy +
                                     ": a budget per (layer, kv head) needed");
    }
    return Run(kv, n, &fixed);
  }

 private:
  // Compresses to the ratio's budgets, or to `fixed` ones.
  Status Run(CompactableKv& kv, int n, const std::vector<int>* fixed) {
    const std::string why = KvCompactionSupports(kv.format());
    if (!why.empty()) {
      return Status::InvalidArgument("kv policy " + options_.policy + ": " +
                                     why);
    }
    const ScoreInput in(config_, kv, n, window_, pool_);
    const int window = std::clamp(n / 16, 1, kMaxWindow);
    Protection protection;
    protection.recent.assign(size_t(in.pairs()), 0);
    Scores scores;
    std::vector<int> budgets;
    const double r = options_.ratio;
    auto set_recent = [&](int rows_or_fraction_of_budget, bool of_budget) {
      for (int p = 0; p < in.pairs(); ++p) {
        protection.recent[size_t(p)] =
            of_budget ? budgets[size_t(p)] / rows_or_fraction_of_budget
                      : rows_or_fraction_of_budget;
      }
    };
    switch (def_.kind) {
      case Kind::kStreaming:
        protection.sinks = kSinks;
        budgets = fixed ? *fixed : UniformBudgets(in, r);
        ScoreStreaming(in, &scores);
        break;
      case Kind::kKnorm:
        budgets = fixed ? *fixed : UniformBudgets(in, r);
        ScoreKnorm(in, &scores);
        break;
      case Kind::kH2o:
        budgets = fixed ? *fixed : UniformBudgets(in, r);
        set_recent(2, true);
        ScoreH2o(in, &scores);
        break;
      case Kind::kTova:
        budgets = fixed ? *fixed : UniformBudgets(in, r);
        ScoreTova(in, &scores);
        break;
      case Kind::kSnapkv:
        budgets = fixed ? *fixed : UniformBudgets(in, r);
        set_recent(window, false);
        ScoreSnapkv(in, window, &scores);
        break;
      case Kind::kExpected:
        protection.sinks = kSinks;
        budgets = fixed ? *fixed : UniformBudgets(in, r);
        ScoreExpected(in, &scores);
        break;
      case Kind::kPyramid:
        budgets = fixed ? *fixed : PyramidBudgets(in, r, window);
        set_recent(window, false);
        ScoreSnapkv(in, window, &scores);
        break;
      case Kind::kCake:
        budgets = fixed ? *fixed : CakeBudgets(in, r, window, window);
        set_recent(window, false);
        ScoreSnapkv(in, window, &scores);
        break;
      case Kind::kAdaKv:
        set_recent(window, false);
        ScoreSnapkv(in, window, &scores);
        budgets = fixed ? *fixed : AdaKvBudgets(in, scores, protection, r);
        break;
      case Kind::kLaCache:
        protection.sinks = kSinks;
        budgets = fixed ? *fixed : UniformBudgets(in, r);
        set_recent(4, true);
        ScoreLadder(in, protection, budgets, &scores);
        break;
    }
    KvSelection selection = Select(in, scores, protection, budgets);
    if (options_.merge) {
      AddMerges(in, scores, MassScores(def_.kind), &selection);
    }
    KV_RETURN_IF_ERROR(kv.Compact(n, selection));
    // Queries of positions before n meet rows that moved: observe anew.
    window_.Clear();
    return Status::OK();
  }

  const ModelConfig config_;
  ThreadPool* pool_;
  const Def& def_;
  const PolicyOptions options_;
  QueryWindow window_;
};

}  // namespace

std::span<const PolicyInfo> Policies() {
  static const std::vector<PolicyInfo> infos = [] {
    std::vector<PolicyInfo> v;
    for (const Def& d : kDefs) v.push_back(d.info);
    return v;
  }();
  return infos;
}

std::string PolicyNames() {
  std::string names;
  for (const Def& d : kDefs) {
    if (!names.empty()) names += ", ";
    names += d.info.name;
  }
  return names;
}

const PolicyInfo* FindPolicy(std::string_view name) {
  const Def* d = FindDef(name);
  return d == nullptr ? nullptr : &d->info;
}

Status CheckPolicyOptions(const PolicyOptions& options) {
  if (FindDef(options.policy) == nullptr) {
    return Status::InvalidArgument("policy: unknown KV compression policy '" +
                                   options.policy + "' (one of " +
                                   PolicyNames() + ")");
  }
  if (!(options.ratio >= 0 && options.ratio < 1)) {
    return Status::InvalidArgument(
        "ratio: the fraction of tokens evicted must be in [0, 1), not " +
        std::to_string(options.ratio));
  }
  if (options.every < 0) {
    return Status::InvalidArgument(
        "every: the positions between compressions must be >= 0, not " +
        std::to_string(options.every));
  }
  return Status::OK();
}

std::string PolicyNamespace(const PolicyOptions& options) {
  char ratio[32];
  const auto end =
      std::to_chars(ratio, ratio + sizeof(ratio), options.ratio).ptr;
  return "policy=" + options.policy + ";ratio=" + std::string(ratio, end) +
         ";merge=" + (options.merge ? "1" : "0");
}

Result<std::unique_ptr<KvCompressor>> MakeCompressor(
    const ModelConfig& config, const PolicyOptions& options, ThreadPool* pool) {
  KV_RETURN_IF_ERROR(CheckPolicyOptions(options));
  return std::unique_ptr<KvCompressor>(
      new PolicyCompressor(config, *FindDef(options.policy), options, pool));
}

}  // namespace kvstash::compress
