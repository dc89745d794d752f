// The commands that need no mount, run in-process through an Io: what they print, their exit
// codes, and that bad input is one line and changes nothing. The e2e suites run the same
// commands as a user would; these pin down output and codes cheaply and next to the code.
#include <fcntl.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "store/pack.h"
#include "store_fixture.h"
#include "test_util.h"
#include "tools/commands.h"

namespace stashfs::cli {
namespace {

using test::RandomBytes;

class CliTest : public test::StoreTest {
 protected:
  // A store holding snapshot "pip-1" (300 KB of random bytes and a small file) and two objects
  // nothing references; the fixture's writer is gone, as after an unmount.
  void SetUp() override {
    test::StoreTest::SetUp();
    Hash big = Put(ObjectKind::kChunk, RandomBytes(300000, 5));
    Hash small = PutChunk("small file");
    Hash tree =
        PutTree(Tree{{FileEntry("big.whl", {{big, 300000}}), FileEntry("small", {{small, 10}})}});
    Hash root = PutRoot(tree, 300010, 2);
    PutChunk("left over");
    Flush();
    ASSERT_OK(store().CreateSnapshot("pip-1", root, false).status());
    store_.reset();
    g_.store = dir();
  }

  struct Run {
    int code;
    std::string out, err;
  };
  template <typename F>
  Run Do(F&& cmd) {
    std::ostringstream out, err;
    Io io{out, err};
    ScopedLogSink log(LogTo(io));
    int code = cmd(io);
    return {code, out.str(), err.str()};
  }
  // A failure prints exactly one line, "stashfs: ...", and nothing on stdout.
  static void ExpectOneErrorLine(const Run& r, const std::string& has) {
    EXPECT_EQ(r.code, kExitError) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err.rfind("stashfs: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(has), std::string::npos) << r.err;
  }
  std::string ConfigFile() {
    std::error_code ec;
    if (!std::filesystem::exists(dir() + "/config", ec)) return "";
    auto s = ReadFileToString(Env::Default(), dir() + "/config");
    return s.ok() ? *s : "";
  }

  GlobalOptions g_;
};

TEST_F(CliTest, LsListsTheSnapshotInTextAndJson) {
  Run r = Do([&](Io& io) { return CmdList(g_, false, io); });
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("snapshot pip-1 "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("293.0 KiB"), std::string::npos) << r.out;  // 300,010 bytes
  r = Do([&](Io& io) { return CmdList(g_, true, io); });
  ASSERT_EQ(r.code, kExitOk) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["snapshots"].size(), 1u);
  EXPECT_EQ(j["snapshots"][0]["key"], "pip-1");
  EXPECT_EQ(j["snapshots"][0]["files"], 2);
  EXPECT_EQ(j["volumes"].size(), 0u);
}

TEST_F(CliTest, StatsJsonCountsWhatIsStored) {
  Run r = Do([&](Io& io) { return CmdStats(g_, true, io); });
  ASSERT_EQ(r.code, kExitOk) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["snapshots"], 1);
  EXPECT_EQ(j["logical_bytes"], 300010);
  EXPECT_EQ(j["unreferenced_objects"], 1);  // "left over"
  EXPECT_EQ(j["store"], dir());
}

TEST_F(CliTest, RmOfAnUnknownNameIsOneLineAndChangesNothing) {
  ExpectOneErrorLine(Do([&](Io& io) { return CmdRemove(g_, "nope", "", io); }),
                     "no snapshot or volume named 'nope'");
  Run r = Do([&](Io& io) { return CmdRemove(g_, "pip-1", "volume", io); });
  EXPECT_EQ(r.code, kExitError);
  r = Do([&](Io& io) { return CmdList(g_, false, io); });
  EXPECT_NE(r.out.find("pip-1"), std::string::npos);
}

TEST_F(CliTest, RmThenGcFreesTheSnapshotsData) {
  Run r = Do([&](Io& io) { return CmdRemove(g_, "pip-1", "", io); });
  ASSERT_EQ(r.code, kExitOk) << r.err;
  r = Do([&](Io& io) { return CmdGc(g_, true, false, io); });
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("would free"), std::string::npos) << r.out;
  r = Do([&](Io& io) { return CmdGc(g_, false, true, io); });
  ASSERT_EQ(r.code, kExitOk) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["dry_run"], false);
  EXPECT_GT(j["object_bytes_deleted"].get<uint64_t>(), 300000u) << r.out;
  EXPECT_LT(j["disk_bytes_after"].get<uint64_t>(), j["disk_bytes_before"].get<uint64_t>() - 290000)
      << r.out;
  r = Do([&](Io& io) { return CmdStats(g_, true, io); });
  EXPECT_EQ(nlohmann::json::parse(r.out)["objects"], 0);
}

TEST_F(CliTest, ConfigSetsShowsAndRefusesBadInputWithoutChangingTheFile) {
  Run r = Do([&](Io& io) { return CmdConfig(g_, "max_size", "20G", false, io); });
  ASSERT_EQ(r.code, kExitOk) << r.err;
  std::string before = ConfigFile();
  EXPECT_NE(before.find("max_size"), std::string::npos) << before;
  ExpectOneErrorLine(Do([&](Io& io) { return CmdConfig(g_, "max_size", "10X", false, io); }),
                     "bad size '10X'");
  ExpectOneErrorLine(Do([&](Io& io) { return CmdConfig(g_, "bogus", "1", false, io); }),
                     "unknown config key 'bogus'");
  EXPECT_EQ(ConfigFile(), before);
  r = Do([&](Io& io) { return CmdConfig(g_, "max_size", "", false, io); });
  EXPECT_EQ(r.code, kExitOk);
  EXPECT_EQ(r.out, "20G\n");
}

TEST_F(CliTest, PruneRefusesABadSizeAndKeepsEverything) {
  ExpectOneErrorLine(Do([&](Io& io) { return CmdPrune(g_, "1Q", "", false, false, io); }),
                     "bad size '1Q'");
  Run r = Do([&](Io& io) { return CmdPrune(g_, "1K", "", true, false, io); });
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("pip-1"), std::string::npos) << r.out;  // what it would remove
  r = Do([&](Io& io) { return CmdList(g_, false, io); });
  EXPECT_NE(r.out.find("pip-1"), std::string::npos) << "a dry run removed it";
}

TEST_F(CliTest, FsckExitCodesSayWhatItFound) {
  Run r = Do([&](Io& io) { return CmdFsck(g_, false, 100, false, io); });
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("no problems"), std::string::npos) << r.out;

  // Flip a byte inside the large chunk's block (the pack's biggest): damage fsck must find.
  std::string pack;
  uint64_t biggest = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(packs_dir())) {
    if (e.is_regular_file() && e.file_size() > biggest) {
      biggest = e.file_size();
      pack = e.path();
    }
  }
  ASSERT_GT(biggest, 300000u);
  {
    ASSERT_OK_AND_ASSIGN(auto f, Env::Default()->Open(pack, O_RDWR));
    uint8_t b = 0;
    size_t got = 0;
    ASSERT_OK(f->pread(biggest / 2, &b, 1, &got));
    b ^= 1;
    ASSERT_OK(f->pwrite(biggest / 2, &b, 1));
  }
  r = Do([&](Io& io) { return CmdFsck(g_, false, 100, false, io); });
  EXPECT_EQ(r.code, kExitDamage) << r.out << r.err;
  r = Do([&](Io& io) { return CmdFsck(g_, true, 100, true, io); });
  EXPECT_EQ(r.code, kExitRepaired) << r.out << r.err;
  // Repaired means isolated: the snapshot that needed the damaged data says so.
  r = Do([&](Io& io) { return CmdList(g_, true, io); });
  EXPECT_EQ(nlohmann::json::parse(r.out)["snapshots"][0]["damaged"], true) << r.out;
}

TEST_F(CliTest, ExportThenImportUnderAnotherKey) {
  std::string file = tmp_.Sub("pip.stash");
  Run r = Do([&](Io& io) { return CmdExport(g_, "pip-1", file, io); });
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_TRUE(std::filesystem::exists(file));
  ExpectOneErrorLine(Do([&](Io& io) { return CmdExport(g_, "nope", file + "2", io); }), "nope");
  EXPECT_FALSE(std::filesystem::exists(file + "2"));
  r = Do([&](Io& io) { return CmdImport(g_, file, "pip-2", io); });
  ASSERT_EQ(r.code, kExitOk) << r.err;
  r = Do([&](Io& io) { return CmdList(g_, false, io); });
  EXPECT_NE(r.out.find("pip-2"), std::string::npos) << r.out;
  // The key is taken now: like a save that lost a race, the key is left as it is, the command
  // says so and succeeds (a cache must not fail a build over it).
  r = Do([&](Io& io) { return CmdImport(g_, file, "pip-2", io); });
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE((r.out + r.err).find("key 'pip-2' already exists; left unchanged"), std::string::npos)
      << r.out << r.err;
}

TEST_F(CliTest, AStoreThatDoesNotExistIsNotCreatedByReadOnlyCommands) {
  g_.store = tmp_.Sub("absent");
  Run r = Do([&](Io& io) { return CmdList(g_, false, io); });
  EXPECT_EQ(r.code, kExitError);
  EXPECT_FALSE(std::filesystem::exists(g_.store));
}

}  // namespace
}  // namespace stashfs::cli
