// FileData's streaming ingest: a file written front to back is chunked and stored while it is
// written, and the result must be exactly what a flush of the finished file stores; any write
// behind the stream must still give the right bytes.
#include "fs/file_data.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <thread>

#include "store_fixture.h"
#include "test_util.h"

namespace stashfs::test {
namespace {

using fs::DataContext;
using fs::FileData;

class FileDataTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    ctx_.objects = &objects();
    ctx_.stats = &store().statistics();
    ctx_.scratch_dir = tmp_.Sub("scratch");
    ctx_.mem_file_max = 64 * 1024;  // larger files are staged in scratch files, as big ones are
    ctx_.chunker = {4 * 1024, 16 * 1024, 64 * 1024};
  }

  // Writes `data` front to back in `piece`-byte writes, taking a stream turn after each write
  // as the volume does (streaming synchronously here).
  void WriteStreaming(FileData& f, const std::vector<uint8_t>& data, size_t piece,
                      bool stream = true) {
    for (size_t off = 0; off < data.size(); off += piece) {
      size_t n = std::min(piece, data.size() - off);
      ASSERT_OK(f.Write(off, reinterpret_cast<const char*>(data.data()) + off, n));
      if (stream && f.TakeStreamTurn()) {
        ASSERT_OK(f.StreamStep(1 << 20));
      }
    }
  }
  FileContent FlushedContent(FileData& f) {
    std::optional<ObjectStore::Lease> lease;
    auto changed = f.Flush(&lease);
    EXPECT_TRUE(changed.ok()) << changed.status().message();
    return f.committed();
  }
  // What a fresh mount would read for `content`: from the store, not from any scratch copy.
  std::vector<uint8_t> ReadStored(const FileContent& content) {
    FileData g(&ctx_, content);
    std::vector<uint8_t> out(content.size);
    auto n = g.Read(0, out.size(), reinterpret_cast<char*>(out.data()));
    EXPECT_TRUE(n.ok()) << n.status().message();
    return out;
  }

  // `a` holds `data` in the same chunks as one flush of the whole file, written without a stream.
  void ExpectSameAsOneWholeFlush(const FileContent& a, const std::vector<uint8_t>& data) {
    FileData whole(&ctx_, {});
    WriteStreaming(whole, data, 64 * 1024, /*stream=*/false);
    EXPECT_EQ(whole.streamed_bytes(), 0u);
    FileContent b = FlushedContent(whole);
    EXPECT_EQ(a.size, data.size());
    ASSERT_TRUE(a.list && b.list);  // hundreds of chunks: both have a LIST object
    EXPECT_EQ(*a.list, *b.list);
    EXPECT_EQ(ReadStored(a), data);
  }
  // Bytes the (single) scratch file has allocated on disk.
  uint64_t ScratchAllocated() {
    DIR* d = opendir(ctx_.scratch_dir.c_str());
    EXPECT_NE(d, nullptr);
    uint64_t total = 0;
    while (dirent* e = d ? readdir(d) : nullptr) {
      struct stat st;
      std::string p = ctx_.scratch_dir + "/" + e->d_name;
      if (e->d_name[0] != '.' && stat(p.c_str(), &st) == 0) total += uint64_t(st.st_blocks) * 512;
    }
    if (d) closedir(d);
    return total;
  }
  // Reads the whole file through FileData in reads of `piece` bytes (not aligned to chunks).
  std::vector<uint8_t> ReadAll(FileData& f, size_t piece) {
    std::vector<uint8_t> out(f.size());
    for (size_t off = 0; off < out.size(); off += piece) {
      size_t n = std::min(piece, out.size() - off);
      auto got = f.Read(off, n, reinterpret_cast<char*>(out.data()) + off);
      EXPECT_TRUE(got.ok()) << got.status().message();
      EXPECT_EQ(got.ok() ? *got : 0, n);
    }
    return out;
  }

  DataContext ctx_;
};

// A sequential reader drops each big chunk's block once it has copied the chunk to its end: the
// kernel's page cache has those bytes, and a block cache full of spent chunks is fresh memory.
TEST_F(FileDataTest, ASequentialReadOfABigFileLeavesLittleInTheBlockCache) {
  ctx_.chunker = {512 * 1024, 1024 * 1024, 2048 * 1024};  // chunks stored alone in their blocks
  auto data = RandomBytes(24 << 20, 41);
  FileContent content;
  {
    FileData f(&ctx_, {});
    ASSERT_OK(f.Write(0, reinterpret_cast<const char*>(data.data()), data.size()));
    content = FlushedContent(f);
  }
  Flush();
  ReopenStore();
  ctx_.objects = &objects();
  ctx_.stats = &store().statistics();
  FileData g(&ctx_, content);
  std::vector<uint8_t> out(data.size());
  for (size_t off = 0; off < out.size(); off += 128 * 1024) {  // as the kernel asks
    auto n = g.Read(off, 128 * 1024, reinterpret_cast<char*>(out.data()) + off);
    ASSERT_TRUE(n.ok()) << n.status().message();
  }
  EXPECT_EQ(out, data);
  // Without the drop, the 16 MiB the cache allows such blocks; with it, at most the blocks a
  // prefetch still in flight loads again.
  EXPECT_LE(objects().block_cache_bytes(), 8u << 20);
}

TEST_F(FileDataTest, TheStoredStreamIsPunchedOutOfTheScratchFileAndReadsFromTheStore) {
  auto data = RandomBytes(4 << 20, 20);
  FileData f(&ctx_, {});
  WriteStreaming(f, data, 64 * 1024);
  const uint64_t streamed = f.streamed_bytes();
  ASSERT_GE(streamed, 2u << 20);
  if (ctx_.no_punch) GTEST_SKIP() << "the scratch filesystem cannot punch holes";
  // Only the unstored tail still takes scratch space (the file is not kept twice).
  EXPECT_EQ(f.scratch_bytes(), data.size() - streamed);
  EXPECT_LE(ScratchAllocated(), data.size() - streamed + 64 * 1024);
  // Reads across the punched boundary: the stored prefix, then the scratch tail.
  EXPECT_EQ(ReadAll(f, 100 * 1000), data);

  // Flushed, the scratch copy stays (with its holes) and still reads right.
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);
  EXPECT_TRUE(f.has_clean_scratch());
  EXPECT_EQ(ReadAll(f, 77 * 1000), data);

  // A write into the punched range after the flush copies the prefix back first.
  EXPECT_EQ(ctx_.stats->Get(Statistic::kScratchBytesCopiedBack), 0u);
  data[12345] ^= 0xff;
  ASSERT_OK(f.Write(12345, reinterpret_cast<const char*>(&data[12345]), 1));
  EXPECT_GE(ctx_.stats->Get(Statistic::kScratchBytesCopiedBack),
            streamed);  // the flush punched what it stored, too
  EXPECT_EQ(ReadAll(f, 1 << 20), data);
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);
}

TEST_F(FileDataTest, AFlushPunchesWhatItStoredOutOfTheScratchFile) {
  ctx_.flush_punch_step = 256 * 1024;
  auto data = RandomBytes(4 << 20, 23);
  FileData f(&ctx_, {});
  WriteStreaming(f, data, 64 * 1024, /*stream=*/false);  // all of it left to the flush
  ASSERT_EQ(f.streamed_bytes(), 0u);
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);
  if (ctx_.no_punch) GTEST_SKIP() << "the scratch filesystem cannot punch holes";
  // What remains is at most the last step and the puts that were still in flight.
  EXPECT_LE(ScratchAllocated(), 1u << 20);
  EXPECT_LE(f.scratch_bytes(), 1u << 20);
  EXPECT_TRUE(f.has_clean_scratch());
  EXPECT_EQ(ReadAll(f, 123 * 1000), data);
  data[1000] ^= 1;  // into the punched range: copied back first
  ASSERT_OK(f.Write(1000, reinterpret_cast<const char*>(&data[1000]), 1));
  EXPECT_GT(ctx_.stats->Get(Statistic::kScratchBytesCopiedBack), 3u << 20);
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);
}

TEST_F(FileDataTest, AWriteIntoWhatAFlushPunchedKeepsTheNewBytes) {
  ctx_.flush_punch_step = 256 * 1024;
  auto data = RandomBytes(3 << 20, 24);
  FileData f(&ctx_, {});
  WriteStreaming(f, data, 64 * 1024, /*stream=*/false);
  // After the flush's first punch, a write lands in the punched range while it still runs: it
  // gets a whole scratch copy back, and the flush neither installs its content nor punches
  // again (its chunks hold the old byte).
  int punches = 0;
  ctx_.after_flush_punch = [&] {
    if (punches++ != 0) return;
    data[1000] ^= 0x5a;
    ASSERT_OK(f.Write(1000, reinterpret_cast<const char*>(&data[1000]), 1));
  };
  std::optional<ObjectStore::Lease> lease;
  auto changed = f.Flush(&lease);
  ASSERT_TRUE(changed.ok()) << changed.status().message();
  ctx_.after_flush_punch = nullptr;
  ASSERT_EQ(punches, 1);
  EXPECT_FALSE(*changed);
  EXPECT_TRUE(f.dirty());
  EXPECT_EQ(ReadAll(f, 200 * 1000), data);
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);
}

TEST_F(FileDataTest, AFileRewrittenInPlaceKeepsAWholeScratchCopy) {
  ctx_.flush_punch_step = 256 * 1024;
  auto data = RandomBytes(3 << 20, 25);
  FileData f(&ctx_, {});
  WriteStreaming(f, data, 64 * 1024);
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);
  if (ctx_.no_punch) GTEST_SKIP() << "the scratch filesystem cannot punch holes";
  ASSERT_LE(ScratchAllocated(), 1u << 20);  // a new file: punched as it was stored
  // Rewritten in place, as a database is: the first write copies the file back once; after
  // that neither a stream step nor a flush punches it, so later rounds copy nothing back.
  for (int round = 0; round < 3; ++round) {
    size_t off = 100000 + round * 700000;
    data[off] ^= 0x77;
    ASSERT_OK(f.Write(off, reinterpret_cast<const char*>(&data[off]), 1));
    if (f.TakeStreamTurn()) {
      ASSERT_OK(f.StreamStep(1 << 20));
    }
    EXPECT_EQ(ReadStored(FlushedContent(f)), data) << "round " << round;
    EXPECT_GE(ScratchAllocated(), data.size()) << "round " << round;
  }
  EXPECT_LE(ctx_.stats->Get(Statistic::kScratchBytesCopiedBack), data.size());
}

TEST_F(FileDataTest, AnAppendAfterAFlushResumesAfterThePunchedPrefix) {
  ctx_.flush_punch_step = 256 * 1024;
  auto data = RandomBytes(5 << 20, 26);
  FileData f(&ctx_, {});
  // Written in two rounds with a flush between, as a log appended now and then is.
  std::vector<uint8_t> first(data.begin(), data.begin() + (2 << 20));
  WriteStreaming(f, first, 64 * 1024);
  FlushedContent(f);
  if (ctx_.no_punch) GTEST_SKIP() << "the scratch filesystem cannot punch holes";
  for (size_t off = first.size(); off < data.size(); off += 64 * 1024) {
    ASSERT_OK(f.Write(off, reinterpret_cast<const char*>(data.data()) + off, 64 * 1024));
    if (f.TakeStreamTurn()) {
      ASSERT_OK(f.StreamStep(1 << 20));
    }
  }
  // Nothing was copied back out of the store, and the result is what one flush of the whole
  // file stores: the same chunks.
  EXPECT_EQ(ctx_.stats->Get(Statistic::kScratchBytesCopiedBack), 0u);
  EXPECT_GT(f.streamed_bytes(), first.size());
  EXPECT_EQ(ReadAll(f, 250 * 1000), data);
  ExpectSameAsOneWholeFlush(FlushedContent(f), data);
}

TEST_F(FileDataTest, ExtendingAFlushedPunchedFileKeepsItsPrefix) {
  auto data = RandomBytes(3 << 20, 21);
  FileData f(&ctx_, {});
  WriteStreaming(f, data, 64 * 1024);
  ASSERT_GT(f.streamed_bytes(), 0u);
  FlushedContent(f);
  // fallocate/ftruncate beyond the end: no write into the prefix, but the next flush chunks the
  // scratch copy from the start, so it must be whole again.
  ASSERT_OK(f.Extend(data.size() + 5000));
  data.resize(data.size() + 5000, 0);
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);
  ASSERT_OK(f.Truncate(data.size() - 100000));
  data.resize(data.size() - 100000);
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);
}

TEST_F(FileDataTest, StreamedFileStoresTheSameChunksAsAWholeFlush) {
  auto data = RandomBytes(3 << 20, 1);
  FileData streamed(&ctx_, {});
  WriteStreaming(streamed, data, 64 * 1024);
  // Most of the file was stored while it was written.
  EXPECT_GE(streamed.streamed_bytes(), data.size() / 2);
  ExpectSameAsOneWholeFlush(FlushedContent(streamed), data);
}

TEST_F(FileDataTest, WriteBehindTheStreamDropsItAndStoresTheNewBytes) {
  auto data = RandomBytes(2 << 20, 2);
  FileData f(&ctx_, {});
  WriteStreaming(f, data, 32 * 1024);
  ASSERT_GT(f.streamed_bytes(), 100u * 1024);
  // Patch a header, as archivers and linkers do after writing the body.
  const char patch[] = "PATCHED";
  ASSERT_OK(f.Write(100, patch, sizeof patch - 1));
  std::copy(patch, patch + sizeof patch - 1, data.begin() + 100);
  EXPECT_EQ(f.streamed_bytes(), 0u);
  EXPECT_FALSE(f.TakeStreamTurn());  // not a front-to-back writer: no new stream until flushed
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);
}

TEST_F(FileDataTest, TruncateBehindTheStreamStoresTheShorterFile) {
  auto data = RandomBytes(2 << 20, 3);
  FileData f(&ctx_, {});
  WriteStreaming(f, data, 64 * 1024);
  ASSERT_GT(f.streamed_bytes(), 300u * 1024);
  ASSERT_OK(f.Truncate(200 * 1024));
  data.resize(200 * 1024);
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);

  // Emptied (O_TRUNC) and written again: a new stream starts from the beginning.
  ASSERT_OK(f.Truncate(0));
  auto again = RandomBytes(1 << 20, 4);
  WriteStreaming(f, again, 64 * 1024);
  EXPECT_GT(f.streamed_bytes(), 0u);
  EXPECT_EQ(ReadStored(FlushedContent(f)), again);
}

TEST_F(FileDataTest, AppendAfterAFlushStreamsAgain) {
  auto data = RandomBytes(3 << 20, 5);
  FileData f(&ctx_, {});
  std::vector<uint8_t> first(data.begin(), data.begin() + (1 << 20));
  WriteStreaming(f, first, 64 * 1024);
  FlushedContent(f);
  for (size_t off = first.size(); off < data.size(); off += 64 * 1024) {
    ASSERT_OK(f.Write(off, reinterpret_cast<const char*>(data.data()) + off, 64 * 1024));
    if (f.TakeStreamTurn()) {
      ASSERT_OK(f.StreamStep(1 << 20));
    }
  }
  EXPECT_GT(f.streamed_bytes(), 0u);
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);
}

TEST_F(FileDataTest, WriteIntoTheWindowAStepIsReadingRestartsTheStream) {
  auto data = RandomBytes(2 << 20, 6);
  FileData f(&ctx_, {});
  // While the first step has read its window (and stored its chunks), a write changes a byte
  // inside it: the step must not keep those chunks; a new stream starts from the beginning (the
  // kernel's writeback sends early ranges again or out of order) and sees the new byte.
  bool fired = false;
  ctx_.after_stream_read = [&] {
    if (fired) return;
    fired = true;
    data[10000] ^= 0x5a;
    ASSERT_OK(f.Write(10000, reinterpret_cast<const char*>(&data[10000]), 1));
  };
  WriteStreaming(f, data, 64 * 1024);
  ctx_.after_stream_read = nullptr;
  ASSERT_TRUE(fired);
  EXPECT_GT(f.streamed_bytes(), 0u);
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);
}

TEST_F(FileDataTest, AStreamThatKeepsLosingItsWindowStopsUntilTheFlush) {
  auto data = RandomBytes(2 << 20, 7);
  FileData f(&ctx_, {});
  // Every step has a byte changed under it, as a writer that really goes back does: after a
  // few restarts the stream stays off, and the flush chunks the file.
  int fired = 0;
  ctx_.after_stream_read = [&] {
    ++fired;
    data[20000] ^= 0x11;
    ASSERT_OK(f.Write(20000, reinterpret_cast<const char*>(&data[20000]), 1));
  };
  WriteStreaming(f, data, 64 * 1024);
  ctx_.after_stream_read = nullptr;
  EXPECT_EQ(fired, 4);  // the first stream and three restarts
  EXPECT_EQ(f.streamed_bytes(), 0u);
  EXPECT_FALSE(f.TakeStreamTurn());
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);
}

TEST_F(FileDataTest, AStepThatLosesItsWindowAfterEarlierStepsLeavesAWholeScratchCopy) {
  auto data = RandomBytes(3 << 20, 22);
  FileData f(&ctx_, {});
  // A later step (earlier ones stored and punched their prefix) has its window changed under
  // it: the punched prefix is copied back, and the stream that starts again from the beginning
  // and the flush must see every byte.
  bool fired = false;
  ctx_.after_stream_read = [&] {
    uint64_t start = f.streamed_bytes();
    if (fired || start == 0) return;
    fired = true;
    data[start + 1000] ^= 0x5a;
    ASSERT_OK(f.Write(start + 1000, reinterpret_cast<const char*>(&data[start + 1000]), 1));
  };
  WriteStreaming(f, data, 64 * 1024);
  ctx_.after_stream_read = nullptr;
  ASSERT_TRUE(fired);
  EXPECT_GT(ctx_.stats->Get(Statistic::kScratchBytesCopiedBack), 0u);
  EXPECT_EQ(ReadAll(f, 300 * 1000), data);
  EXPECT_EQ(ReadStored(FlushedContent(f)), data);
}

TEST_F(FileDataTest, StreamerRacingAWriterThatGoesBackNeverStoresStaleBytes) {
  // A streaming thread races a writer that appends and, now and then, rewrites bytes just
  // behind its end (where the stream may be reading). Whatever the interleaving, the flushed
  // content must be the writer's final bytes.
  for (uint64_t round = 0; round < 8; ++round) {
    auto data = RandomBytes(2 << 20, 10 + round);
    FileData f(&ctx_, {});
    std::atomic<bool> done{false};
    std::thread streamer([&] {
      while (!done) {
        if (f.TakeStreamTurn()) {
          EXPECT_OK(f.StreamStep(128 * 1024));
        }
        std::this_thread::yield();
      }
    });
    const size_t piece = 8 * 1024;
    for (size_t off = 0; off < data.size(); off += piece) {
      ASSERT_OK(f.Write(off, reinterpret_cast<const char*>(data.data()) + off, piece));
      if (off >= 512 * 1024 && (off / piece) % 2 == 0) {
        // Change a byte somewhere in the last 512 KB, where the stream may be reading.
        size_t back = off - (off * 2654435761u) % (512 * 1024);
        data[back] ^= 0x5a;
        ASSERT_OK(f.Write(back, reinterpret_cast<const char*>(&data[back]), 1));
      }
    }
    done = true;
    streamer.join();
    EXPECT_EQ(ReadStored(FlushedContent(f)), data) << "round " << round;
  }
}

}  // namespace
// Scratch files go through the store's Env: a full disk while a big file is written reaches
// the writer as ENOSPC, and what the file held before stays readable and is stored intact once
// there is room again.
TEST_F(FileDataTest, AFullDiskFailsAScratchWriteWithEnospcAndLosesNothingAccepted) {
  test::FaultEnv env;
  ctx_.env = &env;
  auto first = RandomBytes(256 * 1024, 61);
  FileData f(&ctx_, {});
  ASSERT_OK(f.Write(0, reinterpret_cast<const char*>(first.data()), first.size()));
  env.FailWritesAfter(0);
  auto more = RandomBytes(256 * 1024, 62);
  Status st = f.Write(first.size(), reinterpret_cast<const char*>(more.data()), more.size());
  EXPECT_CODE(st, Code::kIOError);
  EXPECT_EQ(st.errno_value(), ENOSPC);
  EXPECT_GT(env.failed_writes(), 0);
  env.ClearFaults();
  std::vector<uint8_t> head(first.size());
  auto n = f.Read(0, head.size(), reinterpret_cast<char*>(head.data()));
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ(head, first);
  // The writer retries once there is room, as a tool would after freeing space.
  ASSERT_OK(f.Write(first.size(), reinterpret_cast<const char*>(more.data()), more.size()));
  FileContent c = FlushedContent(f);
  std::vector<uint8_t> all = first;
  all.insert(all.end(), more.begin(), more.end());
  EXPECT_EQ(ReadStored(c), all);
  ctx_.env = Env::Default();
}

}  // namespace stashfs::test
