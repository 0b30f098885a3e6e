// Runs the real `kvstash` binary: generation with --json, perplexity,
// eval, info, and the one-line errors with a non-zero exit status.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>

#include "tests/testing/redis_server.h"
#include "tests/testing/shared_data.h"

namespace kvstash {
namespace {

struct Output {
  int exit_code;
  std::string out;  // stdout + stderr
};

Output RunKvstash(const std::string& args) {
  const std::string cmd = std::string(KVSTASH_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  Output o{-1, ""};
  if (p == nullptr) return o;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) o.out.append(buf, n);
  const int status = pclose(p);
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return o;
}

std::string ModelFlags() {
  return "--model " +
         testing::SharedPath("models/stories260K/stories260K.bin") +
         " --tokenizer " + testing::SharedPath("models/stories260K/tok512.bin");
}

TEST(CliTest, GenerateJson) {
  Output o =
      RunKvstash("generate " + ModelFlags() +
                 " --prompt 'Once upon a time' --n-predict 20 --temp 0 --json");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  for (const char* key :
       {"\"prompt_ids\"", "\"gen_ids\"", "\"text\"", "\"prefill_tokens_per_s\"",
        "\"decode_tokens_per_s\""}) {
    EXPECT_NE(o.out.find(key), std::string::npos) << key << " in " << o.out;
  }
  EXPECT_NE(o.out.find("there was a little girl named Lily"), std::string::npos)
      << o.out;
}

TEST(CliTest, GenerateStreamsText) {
  Output o = RunKvstash("generate " + ModelFlags() +
                        " --prompt 'Once upon a time' --n-predict 30 --temp 0");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  EXPECT_EQ(o.out.rfind("Once upon a time, there was a little girl", 0), 0u)
      << o.out;
}

// --huge-pages reads the model into its own memory: the same text comes out,
// and a line says how much of it the kernel put in huge pages.
TEST(CliTest, GenerateFromHugePages) {
  const std::string args = "generate " + ModelFlags() +
                           " --prompt 'Once upon a time' --n-predict 30 "
                           "--temp 0";
  Output mapped = RunKvstash(args);
  Output huge = RunKvstash(args + " --huge-pages");
  ASSERT_EQ(mapped.exit_code, 0) << mapped.out;
  ASSERT_EQ(huge.exit_code, 0) << huge.out;
  const std::string said = "--huge-pages: ";
  const size_t line = huge.out.find(said);
  ASSERT_NE(line, std::string::npos) << huge.out;
  const size_t end = huge.out.find('\n', line);
  EXPECT_NE(huge.out.find(" in huge pages", line), std::string::npos)
      << huge.out;
  // The generated text, up to the timings line.
  auto text = [](const std::string& out) {
    return out.substr(0, out.find("\nprefill: "));
  };
  EXPECT_EQ(text(huge.out.substr(end + 1)), text(mapped.out));
  EXPECT_NE(text(mapped.out).find("a little girl named Lily"),
            std::string::npos)
      << mapped.out;
}

// The JSON text continues the prompt as the streamed text does: its first
// token keeps its leading space (" time", not "time").
TEST(CliTest, GenerateJsonTextContinuesThePrompt) {
  const std::string args = "generate " + ModelFlags() +
                           " --prompt 'Once upon a' --n-predict 8 --temp 0";
  const Output as_json = RunKvstash(args + " --json");
  ASSERT_EQ(as_json.exit_code, 0) << as_json.out;
  const nlohmann::json j =
      nlohmann::json::parse(as_json.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(j.is_object()) << as_json.out;
  const std::string text = j.value("text", "");
  EXPECT_EQ(text.rfind(" time,", 0), 0u) << text;
  const Output streamed = RunKvstash(args);
  ASSERT_EQ(streamed.exit_code, 0) << streamed.out;
  EXPECT_EQ(streamed.out.rfind("Once upon a" + text, 0), 0u) << streamed.out;
}

TEST(CliTest, PerplexityJson) {
  Output o = RunKvstash("perplexity " + ModelFlags() + " --file " +
                        testing::SharedPath("data/tinystories_val.txt") +
                        " --ctx 128 --windows 2 --json");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  for (const char* key : {"\"nll\"", "\"ppl\"", "\"top1\"", "\"tokens\":254"}) {
    EXPECT_NE(o.out.find(key), std::string::npos) << key << " in " << o.out;
  }
}

TEST(CliTest, InfoListsConfigAndTensors) {
  Output o =
      RunKvstash("info --model " +
                 testing::SharedPath("models/stories260K/stories260K.gguf"));
  ASSERT_EQ(o.exit_code, 0) << o.out;
  EXPECT_NE(o.out.find("n_kv_heads: 4"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("blk.4.ffn_down.weight"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("tensors: 48"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("types: f32 48\n"), std::string::npos) << o.out;
}

// Every failure: non-zero exit and exactly one line saying what was wrong.
void ExpectOneLineError(const std::string& args, const std::string& needle) {
  Output o = RunKvstash(args);
  EXPECT_NE(o.exit_code, 0) << args;
  EXPECT_EQ(o.out.find('\n'), o.out.size() - 1) << "not one line: " << o.out;
  EXPECT_NE(o.out.find(needle), std::string::npos) << o.out;
}

// The line of `info` output that lists tensor `name` ("  <name> <type> [..]").
std::string InfoLine(const std::string& out, const std::string& name) {
  const size_t at = out.find("  " + name + " ");
  if (at == std::string::npos) return "";
  return out.substr(at, out.find('\n', at) - at);
}

// Greedy generation of up to 4 tokens from `model` succeeds.
void ExpectGenerates(const std::string& model) {
  Output o = RunKvstash("generate --model " + model +
                        " --prompt 'Hello world' --n-predict 4 --temp 0 "
                        "--threads 2 --json");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  const nlohmann::json j =
      nlohmann::json::parse(o.out.substr(o.out.find('{')), nullptr, false);
  ASSERT_TRUE(j.is_object()) << o.out;
  EXPECT_GE(j["gen_ids"].size(), 1u) << o.out;
  EXPECT_LE(j["gen_ids"].size(), 4u) << o.out;
}

// The flags of a 4-layer dim-256 gen-model model (whole K-quant blocks).
std::string KQuantShape() {
  return " --vocab " + testing::SharedPath("vocab/ggml-vocab-llama-spm.gguf") +
         " --dim 256 --layers 4 --heads 4 --kv-heads 2 --ctx 256 --threads 2";
}

// K-quants: gen-model writes llama.cpp's Q4_K_M mixture (--type q4_k_m),
// `info` lists each tensor's type and the count per type, and the file loads
// and generates. 4 layers: attn_v and ffn_down get q6_k on layers 2 and 3.
TEST(CliTest, GenModelQ4KMixture) {
  const std::string dir = testing::TempDir("cli_gen_q4_k_m");
  const std::string shape = KQuantShape();
  // The 1b preset's separate output matrix: output q6_k, token_embd q4_k.
  Output gen = RunKvstash("gen-model --preset 1b --ffn 512 --type q4_k_m" +
                          shape + " --out " + dir + "/gen.gguf");
  ASSERT_EQ(gen.exit_code, 0) << gen.out;
  EXPECT_NE(gen.out.find("q4_k_m weights"), std::string::npos) << gen.out;
  EXPECT_EQ(gen.out.find("note:"), std::string::npos) << gen.out;
  Output info = RunKvstash("info --model " + dir + "/gen.gguf");
  ASSERT_EQ(info.exit_code, 0) << info.out;
  EXPECT_NE(info.out.find("types: q4_k 25, f32 9, q6_k 5\n"), std::string::npos)
      << info.out;
  // general.file_type names the mixture as llama-quantize's files do.
  EXPECT_NE(info.out.find("file type: Q4_K - Medium (15)\n"), std::string::npos)
      << info.out;
  EXPECT_NE(InfoLine(info.out, "output.weight").find(" q6_k "),
            std::string::npos)
      << info.out;
  EXPECT_NE(InfoLine(info.out, "token_embd.weight").find(" q4_k "),
            std::string::npos)
      << info.out;
  for (int l = 0; l < 4; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const std::string more = l >= 2 ? " q6_k " : " q4_k ";
    EXPECT_NE(InfoLine(info.out, b + "attn_v.weight").find(more),
              std::string::npos)
        << info.out;
    EXPECT_NE(InfoLine(info.out, b + "ffn_down.weight").find(more),
              std::string::npos)
        << info.out;
    EXPECT_NE(InfoLine(info.out, b + "attn_q.weight").find(" q4_k "),
              std::string::npos)
        << info.out;
    EXPECT_NE(InfoLine(info.out, b + "ffn_norm.weight").find(" f32 "),
              std::string::npos)
        << info.out;
  }
  ExpectGenerates(dir + "/gen.gguf");
  ExpectOneLineError(
      "gen-model --type q4_k_s" + shape + " --out " + dir + "/x.gguf",
      "is not one of");
}

// convert --type q4_k_m from an f16 model (the 110m preset's tied output:
// the embedding is the output matrix, so q6_k); ffn_down's rows of 320 are
// not whole 256-element super-blocks and fall back to q8_0 with a note; the
// file loads and generates. Then one K-quant for every matrix.
TEST(CliTest, ConvertToKQuants) {
  const std::string dir = testing::TempDir("cli_convert_k");
  const std::string shape = KQuantShape();
  Output f16 = RunKvstash("gen-model --preset 110m --ffn 320 --type f16" +
                          shape + " --out " + dir + "/f16.gguf");
  ASSERT_EQ(f16.exit_code, 0) << f16.out;
  Output conv = RunKvstash("convert --threads 2 --model " + dir +
                           "/f16.gguf --type q4_k_m --out " + dir + "/q.gguf");
  ASSERT_EQ(conv.exit_code, 0) << conv.out;
  EXPECT_NE(conv.out.find("(q4_k_m weights)"), std::string::npos) << conv.out;
  for (int l = 0; l < 4; ++l) {
    const std::string note = "kvstash: note: blk." + std::to_string(l) +
                             ".ffn_down.weight stored as q8_0 (rows are not "
                             "a whole number of " +
                             (l >= 2 ? "q6_k" : "q4_k") + " blocks)";
    EXPECT_NE(conv.out.find(note), std::string::npos) << conv.out;
  }
  Output info = RunKvstash("info --model " + dir + "/q.gguf");
  ASSERT_EQ(info.exit_code, 0) << info.out;
  EXPECT_NE(info.out.find("types: q4_k 22, f32 9, q8_0 4, q6_k 3\n"),
            std::string::npos)
      << info.out;
  EXPECT_NE(InfoLine(info.out, "token_embd.weight").find(" q6_k "),
            std::string::npos)
      << info.out;
  ExpectGenerates(dir + "/q.gguf");

  // One type for every matrix (ffn_down falls back again).
  conv = RunKvstash("convert --threads 2 --model " + dir +
                    "/f16.gguf --type Q5_K --out " + dir + "/q5.gguf");
  ASSERT_EQ(conv.exit_code, 0) << conv.out;
  EXPECT_NE(conv.out.find("(q5_k weights)"), std::string::npos) << conv.out;
  info = RunKvstash("info --model " + dir + "/q5.gguf");
  EXPECT_NE(info.out.find("types: q5_k 25, f32 9, q8_0 4\n"), std::string::npos)
      << info.out;
  EXPECT_NE(info.out.find("file type: Q5_K - Small (16)\n"), std::string::npos)
      << info.out;

  ExpectOneLineError("convert --model " + dir + "/f16.gguf --type q5_0 --out " +
                         dir + "/x.gguf",
                     "q4_k_m");
}

TEST(CliTest, EvalJsonAgainstF16) {
  const std::string prompts = testing::TempDir("cli_eval") + "/prompts.txt";
  std::ofstream(prompts) << "Once upon a time\n\nTom had a red ball.\n";
  Output o =
      RunKvstash("eval " + ModelFlags() + " --file " +
                 testing::SharedPath("data/tinystories_val.txt") +
                 " --ctx 64 --windows 2 --gen-prompts " + prompts +
                 " --gen-tokens 8 --kv-type-k kivi4 --kv-type-v q8 --json");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  const nlohmann::json j =
      nlohmann::json::parse(o.out.substr(o.out.find('{')), nullptr, false);
  ASSERT_TRUE(j.is_object()) << o.out;
  EXPECT_EQ(j["tokens"], 126);
  EXPECT_EQ(j["gen_prompts"], 2);  // the empty line is not a prompt
  EXPECT_EQ(j["candidate"]["kv_type_k"], "kivi4");
  EXPECT_EQ(j["candidate"]["kv_type_v"], "q8");
  EXPECT_EQ(j["baseline"]["kv_type_k"], "f16");
  EXPECT_GT(j["kl_mean"].get<double>(), 0.0);
  EXPECT_LT(j["kv_bytes_ratio"].get<double>(), 1.0);
  EXPECT_EQ(j["first_divergence"].size(), 2u);
}

TEST(CliTest, ErrorsAreOneLine) {
  ExpectOneLineError("generate --model /no/such/file --prompt x",
                     "/no/such/file");
  ExpectOneLineError(
      "generate --model " +
          testing::SharedPath("models/stories260K/stories260K.bin") +
          " --prompt x",
      "--tokenizer");
  ExpectOneLineError("generate " + ModelFlags() + " --prompt x --temp -1",
                     "temperature");
  ExpectOneLineError("generate " + ModelFlags() + " --prompt x --bogus",
                     "--bogus");
  ExpectOneLineError("perplexity " + ModelFlags() + " --file /no/such/text",
                     "/no/such/text");
  ExpectOneLineError("info --model " +
                         testing::SharedPath("models/stories260K/tok512.bin") +
                         "",
                     "--tokenizer");
}

TEST(CliTest, ServingCommandErrorsAreOneLine) {
  const std::string small = ModelFlags() + " --kv-cache-mb 1";
  ExpectOneLineError("serve --model /no/such/file", "/no/such/file");
  ExpectOneLineError("serve " + small + " --block-tokens 0", "--block-tokens");
  ExpectOneLineError("serve " + small + " --port 70000", "--port");
  ExpectOneLineError("serve " + small + " --max-running 0", "max_running");
  ExpectOneLineError("serve " + small + " --kv-type q4_0", "--kv-type");
  // Keys: never on an open port without them; one source; private files.
  ExpectOneLineError("serve " + small + " --port 0 --host 0.0.0.0", "API keys");
  ExpectOneLineError("serve " + small +
                         " --port 0 --api-key short-but-sixteen "
                         "--api-key-file /no/such/keys",
                     "give one of");
  ExpectOneLineError("serve " + small + " --port 0 --api-keys /no/such/keys",
                     "--api-keys");
  ExpectOneLineError("serve " + small + " --port 0 --max-body-mb 0",
                     "--max-body-mb");
  ExpectOneLineError("bench serve " + ModelFlags() + " --new-tokens 0",
                     "new_tokens");
  ExpectOneLineError("bench --threads 2", "--model is required");
  ExpectOneLineError("bench load --clients 2", "--url");
  ExpectOneLineError("bench load --url 127.0.0.1:8080", "http://HOST:PORT");
  ExpectOneLineError("bench load --url http://127.0.0.1:1", "cannot reach");
  ExpectOneLineError("bench load --url http://127.0.0.1:1 --cancel-after 0",
                     "cancel_after");
  ExpectOneLineError(
      "bench load --url http://127.0.0.1:1 --api-key-file /no/such/key",
      "--api-key-file");
  ExpectOneLineError("bench " + ModelFlags() + " --baseline-kv-type q5",
                     "--baseline-kv-type");
  ExpectOneLineError("generate " + ModelFlags() + " --prompt x --kv-type-v q3",
                     "--kv-type-v");
  ExpectOneLineError("eval " + ModelFlags() + " --file " +
                         testing::SharedPath("data/tinystories_val.txt") +
                         " --baseline-kv-type int8",
                     "--baseline-kv-type");
  ExpectOneLineError("eval " + ModelFlags() + " --file " +
                         testing::SharedPath("data/tinystories_val.txt") +
                         " --ctx 1",
                     "--ctx");
  ExpectOneLineError("demo --vocab /no/such/vocab.gguf --cache-dir " +
                         testing::TempDir("cli_demo"),
                     "/no/such/vocab.gguf");
}

// The demo writes its prompts' blocks to a disk cache; `kvstash cache`
// reports, verifies (finding a damaged object), repairs and clears it.
TEST(CliTest, CacheCommandOnADemoDiskCache) {
  const std::string disk = testing::TempDir("cli_disk_cache");
  const std::string demo_args =
      "demo --vocab " + testing::SharedPath("vocab/ggml-vocab-llama-spm.gguf") +
      " --cache-dir " + testing::TempDir("cli_demo2") +
      " --prompt-tokens 200 --kv-cache-mb 64 --disk-cache " + disk;
  Output demo = RunKvstash(demo_args);
  ASSERT_EQ(demo.exit_code, 0) << demo.out;
  EXPECT_NE(demo.out.find("KV tier disk " + disk), std::string::npos)
      << demo.out;
  // A second demo (a new server) loads the document from the disk cache.
  Output again = RunKvstash(demo_args);
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_NE(again.out.find(", from disk "), std::string::npos) << again.out;

  Output stats = RunKvstash("cache stats --json --disk-cache " + disk);
  ASSERT_EQ(stats.exit_code, 0) << stats.out;
  const auto j = nlohmann::json::parse(stats.out);
  // The 200-token document's 12 full blocks at least, in objects of one or
  // more blocks (chunks of up to 512 KiB: two blocks of the 110m shape).
  const int objects = j.value("objects", 0);
  EXPECT_GE(objects, 6) << stats.out;
  ASSERT_EQ(j["namespaces"].size(), 1u) << stats.out;
  const int tokens = j["namespaces"][0].value("tokens", 0);
  EXPECT_GE(tokens, 12 * 16) << stats.out;
  EXPECT_EQ(tokens % 16, 0);
  EXPECT_GE(tokens, objects * 16);

  EXPECT_EQ(RunKvstash("cache verify --disk-cache " + disk).exit_code, 0);
  std::string victim;
  for (const auto& e : std::filesystem::recursive_directory_iterator(disk)) {
    if (e.path().extension() == ".kvo") victim = e.path();
  }
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000);
    f.put('\x55');
    f.put('\x66');
  }
  Output bad = RunKvstash("cache verify --disk-cache " + disk);
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_NE(bad.out.find(victim), std::string::npos) << bad.out;
  Output repaired =
      RunKvstash("cache verify --remove-bad --disk-cache " + disk);
  EXPECT_EQ(repaired.exit_code, 0) << repaired.out;
  EXPECT_NE(repaired.out.find("removed 1 files"), std::string::npos)
      << repaired.out;
  Output cleared = RunKvstash("cache clear --json --disk-cache " + disk);
  ASSERT_EQ(cleared.exit_code, 0) << cleared.out;
  EXPECT_EQ(nlohmann::json::parse(cleared.out).value("removed_files", 0),
            objects - 1);
  Output empty = RunKvstash("cache stats --json --disk-cache " + disk);
  EXPECT_EQ(nlohmann::json::parse(empty.out).value("objects", -1), 0);

  ExpectOneLineError("cache stats --disk-cache /no/such/cache",
                     "/no/such/cache");
  ExpectOneLineError("cache bogus --disk-cache " + disk, "bogus");
}

TEST(CliTest, TierFlagErrorsAreOneLine) {
  const std::string small = ModelFlags() + " --kv-cache-mb 1";
  ExpectOneLineError("serve " + small + " --disk-cache " +
                         testing::TempDir("cli_flags") + " --disk-write later",
                     "--disk-write");
  ExpectOneLineError("serve " + small + " --disk-cache " +
                         testing::TempDir("cli_flags2") + " --disk-cache-gb 0",
                     "--disk-cache-gb");
  ExpectOneLineError("serve " + small + " --redis http://x", "redis://");
  ExpectOneLineError("bench tiers " + ModelFlags(), "disk cache directory");
  ExpectOneLineError("serve " + small + " --tier-codec lz4", "--tier-codec");
  ExpectOneLineError("serve " + small + " --tier-chunk-blocks -1",
                     "--tier-chunk-blocks");
  ExpectOneLineError("serve " + small + " --kv-type q8 --disk-cache " +
                         testing::TempDir("cli_flags3") +
                         " --tier-codec cachegen",
                     "float KV types");
  ExpectOneLineError("eval " + ModelFlags() + " --file " +
                         testing::SharedPath("data/tinystories_val.txt") +
                         " --kv-type q8 --tier-codec cachegen",
                     "--tier-codec");
}

// eval --tier-codec: the candidate's blocks pass through the codec's round
// trip; what it stores is reported against the baseline's KV.
TEST(CliTest, EvalThroughATierCodec) {
  Output o = RunKvstash("eval " + ModelFlags() + " --file " +
                        testing::SharedPath("data/tinystories_val.txt") +
                        " --ctx 64 --windows 2 --tier-codec cachegen --json");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  const nlohmann::json j =
      nlohmann::json::parse(o.out.substr(o.out.find('{')), nullptr, false);
  ASSERT_TRUE(j.is_object()) << o.out;
  EXPECT_EQ(j["tier_codec"], "cachegen");
  EXPECT_GT(j["kl_mean"].get<double>(), 0.0);
  EXPECT_EQ(j["kv_bytes_ratio"].get<double>(), 1.0);
  EXPECT_GT(j["stored_bytes_ratio"].get<double>(), 0.1);
  EXPECT_LT(j["stored_bytes_ratio"].get<double>(), 0.5);
}

// eval --kv-policy: the candidate's windows are compressed half way; a sweep
// prints one JSON line per (policy, ratio); bad policy flags name the flag.
TEST(CliTest, EvalKvPolicyAndSweep) {
  const std::string eval = "eval " + ModelFlags() + " --file " +
                           testing::SharedPath("data/tinystories_val.txt") +
                           " --ctx 64 --windows 2";
  Output o = RunKvstash(eval + " --kv-policy tova --kv-ratio 0.75 --json");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  nlohmann::json j =
      nlohmann::json::parse(o.out.substr(o.out.find('{')), nullptr, false);
  ASSERT_TRUE(j.is_object()) << o.out;
  EXPECT_EQ(j["kv_policy"], "tova");
  EXPECT_EQ(j["compress_at"], 32);
  EXPECT_EQ(j["kept_fraction"].get<double>(), 0.25);
  EXPECT_EQ(j["tokens"], 2 * 31);
  EXPECT_GT(j["copy_tokens"].get<int>(), 0);
  const std::string svg = testing::TempDir("cli_sweep") + "/sweep.svg";
  o = RunKvstash(eval + " --kv-policy streaming --sweep --json --plot " + svg);
  ASSERT_EQ(o.exit_code, 0) << o.out;
  std::istringstream lines(o.out);
  int rows = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.find('{') == std::string::npos) continue;  // progress only
    j = nlohmann::json::parse(line.substr(line.find('{')), nullptr, false);
    ASSERT_TRUE(j.is_object()) << line;
    EXPECT_EQ(j["kv_policy"], "streaming");
    EXPECT_NEAR(j["kept_fraction"].get<double>(),
                1 - j["kv_ratio"].get<double>(), 0.02);
    ++rows;
  }
  EXPECT_EQ(rows, 4);
  // The sweep as a chart: one line of the policy's 4 points.
  std::ifstream in(svg);
  const std::string chart((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  EXPECT_EQ(chart.rfind("<svg", 0), 0u) << svg;
  EXPECT_NE(chart.find(">streaming</text>"), std::string::npos);
  size_t points = 0;
  for (size_t at = chart.find("<circle"); at != std::string::npos;
       at = chart.find("<circle", at + 1)) {
    ++points;
  }
  EXPECT_EQ(points, 4u);
  ExpectOneLineError(eval + " --plot " + svg, "--sweep");
  ExpectOneLineError(eval + " --kv-policy nope", "--kv-policy");
  ExpectOneLineError(eval + " --kv-policy snapkv --kv-ratio 1", "--kv-ratio");
  ExpectOneLineError(eval + " --kv-policy snapkv --kv-type kivi4", "KIVI");
  ExpectOneLineError(eval + " --kv-policy snapkv --compress-at 63",
                     "--compress-at");
  // A fixed budget: compressed again every 8 positions of the scored part.
  o = RunKvstash(eval + " --kv-policy h2o --kv-every 8 --json");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  j = nlohmann::json::parse(o.out.substr(o.out.find('{')), nullptr, false);
  ASSERT_TRUE(j.is_object()) << o.out;
  EXPECT_EQ(j["kv_every"], 8);
  EXPECT_EQ(j["tokens"], 2 * 31);
  ExpectOneLineError(eval + " --kv-policy h2o --kv-every -1", "--kv-every");
  ExpectOneLineError(
      "bench " + ModelFlags() + " --depth 64 --kv-policy h2o --kv-every 8",
      "--kv-every");
}

// bench codec: one row per codec, on the model's real KV.
TEST(CliTest, BenchCodecJson) {
  Output o = RunKvstash("bench codec " + ModelFlags() +
                        " --prompt-tokens 128 --repeat 1 --json");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  const nlohmann::json j =
      nlohmann::json::parse(o.out.substr(o.out.find('{')), nullptr, false);
  ASSERT_TRUE(j.is_object()) << o.out;
  EXPECT_EQ(j["objects"], 8);
  ASSERT_EQ(j["codecs"].size(), 3u);
  for (const nlohmann::json& row : j["codecs"]) {
    EXPECT_TRUE(row["supported"].get<bool>()) << row;
    EXPECT_GT(row["decode_bytes_per_s"]["median"].get<double>(), 0.0);
  }
  EXPECT_EQ(j["codecs"][0]["codec"], "none");
  EXPECT_LT(j["codecs"][2]["object_over_f16"].get<double>(), 0.5);
  o = RunKvstash("bench codec " + ModelFlags() +
                 " --prompt-tokens 128 --repeat 1 --kv-type q8 --json");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  const nlohmann::json q =
      nlohmann::json::parse(o.out.substr(o.out.find('{')), nullptr, false);
  EXPECT_FALSE(q["codecs"][2]["supported"].get<bool>()) << o.out;
}

// --redis-password-file: its password (a private file, trailing newline
// stripped) reaches Redis; a wrong one, or a bad file, is a one-line start-up
// error that names the flag and never shows the password.
TEST(CliTest, RedisPasswordFile) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  Result<std::unique_ptr<testing::RedisServer>> redis =
      testing::RedisServer::Start({.password = "pw-9"});
  ASSERT_TRUE(redis.ok()) << redis.status().ToString();
  const std::string file = testing::TempDir("cli_redis_password") + "/pw";
  const auto write = [&](const std::string& text) {
    std::ofstream(file, std::ios::trunc) << text;
    std::filesystem::permissions(file, std::filesystem::perms::owner_read |
                                           std::filesystem::perms::owner_write);
  };
  const std::string demo =
      "demo --vocab " + testing::SharedPath("vocab/ggml-vocab-llama-spm.gguf") +
      " --cache-dir " + testing::TempDir("cli_demo3") +
      " --prompt-tokens 64 --kv-cache-mb 64 --redis-insecure --redis " +
      (*redis)->url() + " --redis-password-file " + file;
  write("pw-9\n");
  Output o = RunKvstash(demo);
  ASSERT_EQ(o.exit_code, 0) << o.out;
  EXPECT_NE(o.out.find("KV tier redis standalone"), std::string::npos) << o.out;
  Result<std::unique_ptr<testing::RedisClient>> raw =
      testing::RedisClient::Connect((*redis)->port(), "pw-9");
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();
  EXPECT_GT((*raw)->Integer({"DBSIZE"}), 0);

  write("wr0ng-9\n");
  ExpectOneLineError(demo, "WRONGPASS");
  o = RunKvstash(demo);
  EXPECT_NE(o.out.find("--redis-password-file"), std::string::npos) << o.out;
  EXPECT_EQ(o.out.find("wr0ng-9"), std::string::npos) << o.out;
  write("\n");
  ExpectOneLineError(
      demo, "--redis-password-file: secret file '" + file + "' is empty");
  std::filesystem::remove(file);
  ExpectOneLineError(demo, "--redis-password-file: cannot open '" + file);
}

// The fleet's tier key: Redis without one is refused at start, saying how
// to give one; a key file others may read, or a short secret, is refused;
// with a key, both tiers say they use it.
TEST(CliTest, TierKey) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  Result<std::unique_ptr<testing::RedisServer>> redis =
      testing::RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status().ToString();
  const std::string dir = testing::TempDir("cli_tier_key");
  const std::string key = dir + "/tier.key";
  std::ofstream(key) << std::string(64, 'a') << "\n";
  const std::string demo =
      "demo --vocab " + testing::SharedPath("vocab/ggml-vocab-llama-spm.gguf") +
      " --cache-dir " + testing::TempDir("cli_demo4") +
      " --prompt-tokens 64 --kv-cache-mb 64 --redis " + (*redis)->url();
  std::filesystem::permissions(key, std::filesystem::perms(0600));
  const Output o = RunKvstash(demo + " --tier-key-file " + key +
                              " --disk-cache " + dir + "/disk");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  // With the MAC it seals with (the faster on this CPU).
  EXPECT_TRUE(std::regex_search(
      o.out, std::regex("write on commit, fleet key "
                        "\\((gmac-aes-256|chacha20-poly1305)\\)")))
      << o.out;
  ExpectOneLineError(demo, "--tier-key-file FILE");
  ExpectOneLineError(demo, "--redis-insecure");
  std::filesystem::permissions(key, std::filesystem::perms(0644));
  ExpectOneLineError(demo + " --tier-key-file " + key, "chmod 600 " + key);
  ASSERT_EQ(::setenv("KVSTASH_TIER_KEY", "too short", 1), 0);
  ExpectOneLineError(demo, "KVSTASH_TIER_KEY: a tier key needs a secret of");
  ASSERT_EQ(::unsetenv("KVSTASH_TIER_KEY"), 0);
}

}  // namespace
}  // namespace kvstash
