#include "store/buffer_pool.h"

#include <gtest/gtest.h>

#include <cstring>
#include <future>
#include <vector>

#include "store/object_store.h"
#include "store_fixture.h"
#include "test_util.h"

namespace stashfs {
namespace {

TEST(BufferPoolTest, ReturnedBufferIsReusedForItsClass) {
  BufferPool pool;
  auto a = pool.Take(300 * 1024);
  EXPECT_EQ(a.capacity(), 512u * 1024);  // rounded up to its class
  EXPECT_TRUE(a.empty());
  a.resize(300 * 1024);
  const uint8_t* pages = a.data();
  pool.Give(std::move(a));
  EXPECT_EQ(pool.free_bytes(), 512u * 1024);
  auto b = pool.Take(400 * 1024);  // same class: the same memory
  EXPECT_EQ(b.data(), pages);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(pool.reused(), 1u);
  EXPECT_EQ(pool.free_bytes(), 0u);
  auto c = pool.Take(100 * 1024);  // another class: fresh
  EXPECT_EQ(c.capacity(), 128u * 1024);
  EXPECT_EQ(pool.reused(), 1u);
}

TEST(BufferPoolTest, TakeSizedHasTheSizeAndKeepsTheClass) {
  BufferPool pool;
  auto a = pool.TakeSized(70 * 1024, 200 * 1024);
  EXPECT_EQ(a.size(), 70u * 1024);
  EXPECT_EQ(a.capacity(), 256u * 1024);
  a.assign(a.size(), 0xab);
  const uint8_t* pages = a.data();
  pool.Give(std::move(a));
  auto b = pool.TakeSized(100 * 1024, 256 * 1024);  // grows: the new part is zeroed
  EXPECT_EQ(b.data(), pages);
  ASSERT_EQ(b.size(), 100u * 1024);
  EXPECT_EQ(b[70 * 1024 - 1], 0xab);
  EXPECT_EQ(b[100 * 1024 - 1], 0);
  pool.Give(std::move(b));
  auto c = pool.Take(256 * 1024);  // Take is always empty
  EXPECT_EQ(c.data(), pages);
  EXPECT_TRUE(c.empty());
}

// The block cache's buffers: taken and given back at their whole capacity, so a reuse neither
// shrinks nor regrows them, and nothing zero-fills them again.
TEST(BufferPoolTest, TakeFullIsItsWholeCapacityAndIsNotZeroedAgain) {
  BufferPool pool;
  auto a = pool.TakeFull(300 * 1024);
  EXPECT_EQ(a.size(), 512u * 1024);
  EXPECT_EQ(a.capacity(), 512u * 1024);
  std::memset(a.data(), 0xab, a.size());
  const uint8_t* pages = a.data();
  pool.Give(std::move(a));
  auto b = pool.TakeFull(400 * 1024);
  EXPECT_EQ(b.data(), pages);
  ASSERT_EQ(b.size(), 512u * 1024);
  EXPECT_EQ(b[0], 0xab);
  EXPECT_EQ(b[512 * 1024 - 1], 0xab);
  auto small = pool.TakeFull(1000);  // below the classes: exactly what was asked
  EXPECT_EQ(small.size(), small.capacity());
  EXPECT_GE(small.size(), 1000u);
}

TEST(BufferPoolTest, AnEmptyClassIsServedFromTheClassAbove) {
  BufferPool pool;
  auto big = pool.Take(1 << 20);
  const uint8_t* pages = big.data();
  pool.Give(std::move(big));
  auto a = pool.TakeSized(300 * 1024);  // class 512 KiB is empty: the 1 MiB buffer serves
  EXPECT_EQ(a.data(), pages);
  EXPECT_EQ(a.capacity(), 1u << 20);
  EXPECT_EQ(a.size(), 300u * 1024);
  pool.Give(std::move(a));  // and goes back to its own class
  auto b = pool.Take(1 << 20);
  EXPECT_EQ(b.data(), pages);
  pool.Give(std::move(b));
  auto c = pool.Take(200 * 1024);  // two classes below: not served from it
  EXPECT_NE(c.data(), pages);
  EXPECT_EQ(c.capacity(), 256u * 1024);
  EXPECT_EQ(pool.free_bytes(), 1u << 20);
}

TEST(BufferPoolTest, BuffersOutsideTheClassesAreNotKept) {
  BufferPool pool;
  auto small = pool.Take(1000);
  pool.Give(std::move(small));
  auto huge = pool.Take(BufferPool::kMaxPooled + 1);
  EXPECT_GE(huge.capacity(), BufferPool::kMaxPooled + 1);
  pool.Give(std::move(huge));
  auto grown = pool.Take(64 * 1024);
  grown.resize(64 * 1024 + 1);  // reallocated past its class
  pool.Give(std::move(grown));
  std::vector<uint8_t> foreign(3 * 100 * 1024);  // not a power of two
  pool.Give(std::move(foreign));
  EXPECT_EQ(pool.free_bytes(), 0u);
}

TEST(BufferPoolTest, HoldsAtMostItsLimit) {
  BufferPool pool(1 << 20);
  std::vector<std::vector<uint8_t>> bufs;
  for (int i = 0; i < 5; ++i)
    bufs.push_back(pool.Take(256 * 1024));
  for (auto& b : bufs)
    pool.Give(std::move(b));
  EXPECT_EQ(pool.free_bytes(), 1u << 20);  // four of the five
}

TEST(BufferPoolTest, TrimFreesOnlyAfterAnIdleInterval) {
  BufferPool pool;
  pool.Give(pool.Take(64 * 1024));
  pool.TrimIfIdle();  // something was taken since the last call: kept
  EXPECT_EQ(pool.free_bytes(), 64u * 1024);
  pool.TrimIfIdle();  // nothing taken since: freed
  EXPECT_EQ(pool.free_bytes(), 0u);
}

TEST(BufferPoolTest, SharedBufferComesBackWhenTheLastHolderLetsGo) {
  auto pool = std::make_shared<BufferPool>();
  auto buf = pool->Take(128 * 1024);
  buf.assign(1000, 7);
  auto shared = ShareWithPool(std::move(buf), pool);
  auto second = shared;
  EXPECT_EQ((*shared)[999], 7);
  shared.reset();
  EXPECT_EQ(pool->free_bytes(), 0u);
  second.reset();
  EXPECT_EQ(pool->free_bytes(), 128u * 1024);
}

class ObjectStoreBuffersTest : public test::StoreTest {};

// Large objects put and read back reuse the store's buffers instead of mapping fresh memory for
// every chunk copy, compressed block and decompressed block; the bytes stay right.
TEST_F(ObjectStoreBuffersTest, LargePutsAndReadsReuseBuffers) {
  std::vector<std::vector<uint8_t>> datas;
  std::vector<Hash> hashes;
  for (int i = 0; i < 12; ++i) {
    datas.push_back(test::CompressibleBytes(700 * 1024 + i * 1000, 100 + i));
    auto copy = objects().buffers().Take(datas.back().size());
    copy.assign(datas.back().begin(), datas.back().end());
    auto fut = objects().PutAsync(ObjectKind::kChunk, std::move(copy));
    ASSERT_OK_AND_ASSIGN(Hash h, fut.get());
    EXPECT_EQ(h, Hash::Of(std::span<const uint8_t>(datas.back())));
    hashes.push_back(h);
  }
  Flush();
  const uint64_t after_puts = objects().buffers().reused();
  EXPECT_GE(after_puts, 10u);
  ReopenStore();
  for (int round = 0; round < 2; ++round) {
    for (size_t i = 0; i < hashes.size(); ++i)
      EXPECT_TRUE(Holds(ObjectKind::kChunk, hashes[i], datas[i])) << i;
  }
  EXPECT_GT(objects().buffers().reused(), 0u);
}

}  // namespace
}  // namespace stashfs
