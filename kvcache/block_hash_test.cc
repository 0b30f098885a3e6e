#include "kvcache/block_hash.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <numeric>
#include <string>
#include <vector>

#include "store/object_format.h"

namespace kvstash::kvcache {
namespace {

using kernels::KvFormat;
using kernels::KvType;

BlockLayout TestLayout(KvFormat kv = {}) {
  BlockLayout l;
  l.n_layers = 2;
  l.n_kv_heads = 2;
  l.head_dim = 8;
  l.block_tokens = 16;
  l.kv = kv;
  return l;
}

constexpr store::Codec kRaw = store::Codec::kRaw;

Hash128 ModelRoot(std::string_view salt) {
  return RootHash(HashBytes("model", 5), TestLayout(), kRaw, salt);
}

std::vector<int32_t> Tokens16() {
  std::vector<int32_t> t(16);
  std::iota(t.begin(), t.end(), 100);
  t[3] = -1;  // negative ids encode as their two's complement
  return t;
}

// The hex of h_2 for two blocks of 16 tokens under ModelRoot(salt).
std::string ChainHex(std::string_view salt) {
  const std::vector<int32_t> t = Tokens16();
  const Hash128 h1 = BlockHash(ModelRoot(salt), t);
  return BlockHash(h1, t).Hex();
}

// Pins the canonical encoding: a change here invalidates every stored block.
TEST(BlockHashTest, GoldenValues) {
  const Hash128 root = ModelRoot("");
  EXPECT_EQ(root.Hex(), "b9b6ba724d79c3fb29f8e5e8facecf59");
  EXPECT_EQ(BlockHash(root, Tokens16()).Hex(),
            "304890f180e12cf7cc34425b68a19bda");
}

// The root names the K and V types and, per side, the scale group, the
// packing stripe (0 for float types) and whether the head is rotated.
TEST(BlockHashTest, RootEncodesTheLittleEndianFields) {
  Hasher128 h;
  h.Add(std::string_view("kvstash-kv-v3")).Add(HashBytes("model", 5));
  h.AddU32(2).AddU32(2).AddU32(8).AddU32(16);
  h.AddU32(1).AddU32(1);            // K f16, V f16
  h.AddU32(8).AddU32(0).AddU32(0);  // K: group 8, not packed, not rotated
  h.AddU32(8).AddU32(0).AddU32(0);  // V
  h.AddU32(0);                      // tier codec none
  h.AddU32(store::kObjectFormatVersion);
  h.AddU64(3).Add(std::string_view("abc"));
  EXPECT_EQ(ModelRoot("abc"), h.Finish());

  // K q4h: 4-bit codes in stripes of 4 (4 * 2 codes per 8 dims), rotated;
  // V kivi2: 2-bit codes in stripes of 2 (2 * 4 per 8 dims).
  Hasher128 q;
  q.Add(std::string_view("kvstash-kv-v3")).Add(HashBytes("model", 5));
  q.AddU32(2).AddU32(2).AddU32(8).AddU32(16);
  q.AddU32(uint32_t(KvType::kQ4H)).AddU32(uint32_t(KvType::kKivi2));
  q.AddU32(8).AddU32(4).AddU32(1);
  q.AddU32(8).AddU32(2).AddU32(0);
  q.AddU32(1);  // tier codec zstd
  q.AddU32(store::kObjectFormatVersion);
  q.AddU64(0);
  EXPECT_EQ(RootHash(HashBytes("model", 5),
                     TestLayout({KvType::kQ4H, KvType::kKivi2}),
                     store::Codec::kZstd, ""),
            q.Finish());
}

TEST(BlockHashTest, BlockEncodesParentThenTokens) {
  const Hash128 parent{1, 2};
  const std::array<int32_t, 2> tokens = {0x01020304, -2};
  const uint8_t bytes[] = {
      1,    0,    0,    0,    0, 0, 0, 0,  // parent.lo
      2,    0,    0,    0,    0, 0, 0, 0,  // parent.hi
      4,    3,    2,    1,                 // 0x01020304
      0xfe, 0xff, 0xff, 0xff,              // -2
  };
  EXPECT_EQ(BlockHash(parent, tokens), HashBytes(bytes, sizeof(bytes)));
}

// Rows of a compacted prefix: their own namespace per transform, a chain
// over the whole prefix, one name per block of rows.
TEST(BlockHashTest, RowsAreNamedApartFromPositionsAndPerTransform) {
  const Hash128 root = ModelRoot("");
  const Hash128 rows = RowsRoot(root, "policy=knorm;ratio=0.5");
  Hasher128 h;
  h.Add(std::string_view("kvstash-rows-v1")).Add(root);
  h.AddU64(22).Add(std::string_view("policy=knorm;ratio=0.5"));
  EXPECT_EQ(rows, h.Finish());
  EXPECT_NE(rows, RowsRoot(root, "policy=knorm;ratio=0.75"));
  EXPECT_NE(rows, RowsRoot(ModelRoot("tenant-a"), "policy=knorm;ratio=0.5"));

  std::vector<int32_t> prefix = Tokens16();
  prefix.push_back(7);  // need not end on a block boundary
  const std::vector<Hash128> chain = RowsChain(rows, prefix, 3);
  ASSERT_EQ(chain.size(), 3u);
  const int32_t zero = 0, two = 2;
  EXPECT_EQ(chain[0], BlockHash(BlockHash(rows, prefix), std::span(&zero, 1)));
  EXPECT_EQ(chain[2], BlockHash(chain[1], std::span(&two, 1)));
  // A longer chain of the same prefix extends it; another prefix shares
  // nothing; the positions' chain never meets it.
  EXPECT_EQ(RowsChain(rows, prefix, 4)[2], chain[2]);
  prefix.back() = 8;
  EXPECT_NE(RowsChain(rows, prefix, 1)[0], chain[0]);
  EXPECT_NE(chain[0], BlockHash(root, Tokens16()));
}

TEST(BlockHashTest, SaltModelAndLayoutSeparateNamespaces) {
  EXPECT_NE(ModelRoot("tenant-a"), ModelRoot(""));
  EXPECT_NE(ModelRoot("tenant-a"), ModelRoot("tenant-b"));
  EXPECT_NE(ChainHex("tenant-a"), ChainHex(""));
  EXPECT_NE(RootHash(HashBytes("other", 5), TestLayout(), kRaw, ""),
            ModelRoot(""));
  // Each tier codec is its own namespace: a cachegen block (lossy) is never
  // looked up as a raw one.
  EXPECT_NE(RootHash(HashBytes("model", 5), TestLayout(),
                     store::Codec::kCacheGen, ""),
            ModelRoot(""));
  EXPECT_NE(
      RootHash(HashBytes("model", 5), TestLayout(), store::Codec::kZstd, ""),
      RootHash(HashBytes("model", 5), TestLayout(), store::Codec::kCacheGen,
               ""));
  // Every pair of K and V types is its own namespace (K q8 + V q4h is not
  // K q4h + V q8): a block is never read as another type's bytes.
  std::vector<Hash128> roots;
  for (int k = 0; k < kernels::kKvTypeCount; ++k) {
    for (int v = 0; v < kernels::kKvTypeCount; ++v) {
      roots.push_back(RootHash(HashBytes("model", 5),
                               TestLayout({KvType(k), KvType(v)}), kRaw, ""));
    }
  }
  for (size_t i = 0; i < roots.size(); ++i) {
    for (size_t j = i + 1; j < roots.size(); ++j) {
      EXPECT_NE(roots[i], roots[j]) << i << " vs " << j;
    }
  }
  EXPECT_EQ(roots[size_t(KvType::kF16) * kernels::kKvTypeCount +
                  size_t(KvType::kF16)],
            ModelRoot(""));
  BlockLayout b32 = TestLayout();
  b32.block_tokens = 32;
  EXPECT_NE(RootHash(HashBytes("model", 5), b32, kRaw, ""), ModelRoot(""));
}

TEST(BlockHashTest, ChainDependsOnEveryToken) {
  const std::vector<int32_t> t = Tokens16();
  const Hash128 root = ModelRoot("");
  for (size_t i = 0; i < t.size(); ++i) {
    std::vector<int32_t> u = t;
    ++u[i];
    EXPECT_NE(BlockHash(root, u), BlockHash(root, t)) << "token " << i;
  }
  EXPECT_NE(BlockHash(BlockHash(root, t), t), BlockHash(root, t));
}

// Names carry no per-process state (seeds, addresses): a forked child
// computes the same chain.
TEST(BlockHashTest, SameNamesInAnotherProcess) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    const std::string hex = ChainHex("salt");
    const bool ok =
        write(fds[1], hex.data(), hex.size()) == ssize_t(hex.size());
    _exit(ok ? 0 : 1);
  }
  close(fds[1]);
  std::string got(64, '\0');
  size_t n = 0;
  for (ssize_t r; (r = read(fds[0], got.data() + n, got.size() - n)) > 0;) {
    n += size_t(r);
  }
  close(fds[0]);
  got.resize(n);
  int wstatus = 0;
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  EXPECT_EQ(got, ChainHex("salt"));
}

}  // namespace
}  // namespace kvstash::kvcache
