// The Backend contract, run against every implementation: the local directory, the same behind a
// FaultBackend that injects nothing (so the decorator is known to be transparent), and the
// directory over a FaultEnv (so the crash tests below use the real write path). A remote backend
// joins the list and must pass the same tests.
#include "store/backend.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <thread>

#include "fault_backend.h"
#include "fault_env.h"
#include "test_util.h"

namespace stashfs {
namespace {

using test::Bytes;
using test::FaultBackend;
using test::Span;
using test::Str;
using test::TempDir;

struct Impl {
  std::string name;
  // Makes a backend rooted in `dir`; `keep` holds whatever it needs alive.
  std::function<Backend*(const std::string& dir, std::vector<std::shared_ptr<void>>* keep)> make;
};

std::vector<Impl> Impls() {
  return {
      {"dir",
       [](const std::string& dir, auto* keep) {
         auto b = std::make_shared<DirBackend>(Env::Default(), dir);
         keep->push_back(b);
         return b.get();
       }},
      {"fault_free",
       [](const std::string& dir, auto* keep) {
         auto base = std::make_shared<DirBackend>(Env::Default(), dir);
         auto b = std::make_shared<FaultBackend>(base.get());
         keep->push_back(base);
         keep->push_back(b);
         return b.get();
       }},
      {"dir_on_fault_env",
       [](const std::string& dir, auto* keep) {
         auto env = std::make_shared<test::FaultEnv>();
         auto b = std::make_shared<DirBackend>(env.get(), dir);
         keep->push_back(env);
         keep->push_back(b);
         return b.get();
       }},
  };
}

class BackendContract : public ::testing::TestWithParam<Impl> {
 protected:
  void SetUp() override { b_ = GetParam().make(tmp_.Sub("root"), &keep_); }
  std::string Read(const std::string& name, uint64_t off, size_t n) {
    std::vector<uint8_t> out{'x'};
    Status st = b_->ReadRange(name, off, n, &out);
    EXPECT_OK(st);
    return Str(out);
  }
  std::vector<std::string> Names(const std::string& prefix) {
    auto r = b_->List(prefix);
    EXPECT_OK(r.status());
    std::vector<std::string> names;
    if (r.ok())
      for (auto& i : *r)
        names.push_back(i.name);
    return names;
  }

  TempDir tmp_;
  std::vector<std::shared_ptr<void>> keep_;
  Backend* b_ = nullptr;
};

TEST_P(BackendContract, PutThenReadWholeAndRanges) {
  auto data = test::RandomBytes(100000, 7);
  ASSERT_OK(b_->Put("packs/ab/1.pack", data));
  ASSERT_OK_AND_ASSIGN(auto all, b_->ReadAll("packs/ab/1.pack"));
  EXPECT_EQ(all, data);
  EXPECT_EQ(Read("packs/ab/1.pack", 10, 5), Str(std::span(data).subspan(10, 5)));
  // A range running past the end gives what is there; one starting past it gives nothing.
  EXPECT_EQ(Read("packs/ab/1.pack", 99998, 10), Str(std::span(data).subspan(99998)));
  EXPECT_EQ(Read("packs/ab/1.pack", 200000, 10), "");
  ASSERT_OK_AND_ASSIGN(auto info, b_->Stat("packs/ab/1.pack"));
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->name, "packs/ab/1.pack");
  EXPECT_EQ(info->size, data.size());
  EXPECT_NEAR(static_cast<double>(info->modified), static_cast<double>(::time(nullptr)), 120);

  ASSERT_OK(b_->Put("empty", {}));
  ASSERT_OK_AND_ASSIGN(auto none, b_->ReadAll("empty"));
  EXPECT_TRUE(none.empty());
}

TEST_P(BackendContract, PutReplacesWholly) {
  ASSERT_OK(b_->Put("refs/k", Span("a longer first version")));
  ASSERT_OK(b_->Put("refs/k", Span("v2")));
  ASSERT_OK_AND_ASSIGN(auto back, b_->ReadAll("refs/k"));
  EXPECT_EQ(Str(back), "v2");
  EXPECT_EQ(Names(""), std::vector<std::string>{"refs/k"});  // no temporary left behind
}

TEST_P(BackendContract, MissingBlobs) {
  ASSERT_OK_AND_ASSIGN(auto info, b_->Stat("refs/none"));
  EXPECT_FALSE(info.has_value());
  std::vector<uint8_t> out;
  EXPECT_CODE(b_->ReadRange("refs/none", 0, 10, &out), Code::kNotFound);
  EXPECT_CODE(b_->ReadAll("refs/none").status(), Code::kNotFound);
  EXPECT_TRUE(Names("").empty());
  EXPECT_TRUE(Names("refs/").empty());
  // A prefix that names a "directory" is not a blob.
  ASSERT_OK(b_->Put("refs/a/b", Span("x")));
  ASSERT_OK_AND_ASSIGN(info, b_->Stat("refs/a"));
  EXPECT_FALSE(info.has_value());
}

TEST_P(BackendContract, PutIfAbsentCreatesOnceAndNeverOverwrites) {
  ASSERT_OK(b_->PutIfAbsent("refs/snapshots/pip-1", Span("first")));
  EXPECT_CODE(b_->PutIfAbsent("refs/snapshots/pip-1", Span("second")), Code::kAlreadyExists);
  ASSERT_OK_AND_ASSIGN(auto back, b_->ReadAll("refs/snapshots/pip-1"));
  EXPECT_EQ(Str(back), "first");
  EXPECT_EQ(Names(""), std::vector<std::string>{"refs/snapshots/pip-1"});
}

TEST_P(BackendContract, PutIfAbsentRaceHasExactlyOneWinner) {
  constexpr int kRacers = 8;
  std::atomic<int> won{0}, lost{0};
  std::vector<std::thread> racers;
  for (int i = 0; i < kRacers; ++i) {
    racers.emplace_back([&, i] {
      Status st = b_->PutIfAbsent("refs/k", Span("racer " + std::to_string(i)));
      if (st.ok()) ++won;
      if (st.code() == Code::kAlreadyExists) ++lost;
    });
  }
  for (auto& t : racers)
    t.join();
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(lost.load(), kRacers - 1);
  ASSERT_OK_AND_ASSIGN(auto back, b_->ReadAll("refs/k"));
  EXPECT_EQ(Str(back).rfind("racer ", 0), 0u);
}

TEST_P(BackendContract, ListIsByPlainPrefixInNameOrder) {
  for (const char* n : {"refs/k10", "packs/02/b.pack", "refs/k1", "refsx", "packs/01/a.pack"})
    ASSERT_OK(b_->Put(n, Span(n)));
  EXPECT_EQ(Names("refs/"), (std::vector<std::string>{"refs/k1", "refs/k10"}));
  EXPECT_EQ(Names("refs"), (std::vector<std::string>{"refs/k1", "refs/k10", "refsx"}));
  EXPECT_EQ(Names("refs/k1"), (std::vector<std::string>{"refs/k1", "refs/k10"}));
  EXPECT_EQ(Names("packs/0"), (std::vector<std::string>{"packs/01/a.pack", "packs/02/b.pack"}));
  EXPECT_EQ(Names("").size(), 5u);
  EXPECT_TRUE(Names("nope/").empty());
  ASSERT_OK_AND_ASSIGN(auto infos, b_->List("refsx"));
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0].size, 5u);
}

TEST_P(BackendContract, DeleteIsIdempotent) {
  ASSERT_OK(b_->Put("packs/01/a.pack", Span("x")));
  ASSERT_OK(b_->Delete("packs/01/a.pack"));
  ASSERT_OK(b_->Delete("packs/01/a.pack"));
  ASSERT_OK(b_->Delete("packs/99/never.pack"));
  EXPECT_TRUE(Names("").empty());
}

TEST_P(BackendContract, BadNamesAreRefusedAndChangeNothing) {
  for (const char* n : {"", "../escape", "/abs", "a//b", "a/", ".hidden", "a/./b", "a/../b",
                        "with space", "tab\tname", "new\nline"}) {
    SCOPED_TRACE(n);
    EXPECT_CODE(b_->Put(n, Span("x")), Code::kInvalidArgument);
    EXPECT_CODE(b_->PutIfAbsent(n, Span("x")), Code::kInvalidArgument);
    std::vector<uint8_t> out;
    EXPECT_CODE(b_->ReadRange(n, 0, 1, &out), Code::kInvalidArgument);
    EXPECT_CODE(b_->Stat(n).status(), Code::kInvalidArgument);
    EXPECT_CODE(b_->Delete(n), Code::kInvalidArgument);
  }
  EXPECT_TRUE(Names("").empty());
  EXPECT_FALSE(std::filesystem::exists(tmp_.Sub("escape")));
}

INSTANTIATE_TEST_SUITE_P(All, BackendContract, ::testing::ValuesIn(Impls()),
                         [](const auto& p) { return p.param.name; });

// ---- what the fault decorator does (the remote tier's tests lean on it) --------------------

TEST(FaultBackendTest, InjectedFailuresDoNotReachTheBase) {
  TempDir tmp;
  DirBackend dir(Env::Default(), tmp.path());
  FaultBackend b(&dir);
  b.FailNext(FaultBackend::Op::kPut, 2, Status::IOError("HTTP 503", EAGAIN));
  EXPECT_CODE(b.Put("a", Span("1")), Code::kIOError);
  EXPECT_CODE(b.Put("a", Span("1")), Code::kIOError);
  ASSERT_OK_AND_ASSIGN(auto info, dir.Stat("a"));
  EXPECT_FALSE(info.has_value());
  EXPECT_EQ(b.calls(FaultBackend::Op::kPut), 0);
  ASSERT_OK(b.Put("a", Span("1")));  // the third try gets through
  EXPECT_EQ(b.calls(FaultBackend::Op::kPut), 1);
}

TEST(FaultBackendTest, TornPutLeavesAPrefixAndSaysItFailed) {
  TempDir tmp;
  DirBackend dir(Env::Default(), tmp.path());
  FaultBackend b(&dir);
  b.TearNextPut(3);
  EXPECT_CODE(b.Put("packs/1.pack", Span("0123456789")), Code::kIOError);
  // A reader that trusts names alone would see 3 bytes: pack readers check sizes and headers.
  ASSERT_OK_AND_ASSIGN(auto back, dir.ReadAll("packs/1.pack"));
  EXPECT_EQ(Str(back), "012");
  ASSERT_OK(b.Put("packs/1.pack", Span("0123456789")));  // the retry replaces it whole
  ASSERT_OK_AND_ASSIGN(back, dir.ReadAll("packs/1.pack"));
  EXPECT_EQ(Str(back), "0123456789");
}

TEST(FaultBackendTest, LostReplyOfAConditionalCreate) {
  // The create took effect, the caller heard an error, and its retry hears AlreadyExists: a ref
  // protocol must then read the ref to learn whether it is its own.
  TempDir tmp;
  DirBackend dir(Env::Default(), tmp.path());
  FaultBackend b(&dir);
  b.LoseNextReply(FaultBackend::Op::kPutIfAbsent);
  EXPECT_CODE(b.PutIfAbsent("refs/k", Span("mine")), Code::kIOError);
  EXPECT_CODE(b.PutIfAbsent("refs/k", Span("mine")), Code::kAlreadyExists);
  ASSERT_OK_AND_ASSIGN(auto back, b.ReadAll("refs/k"));
  EXPECT_EQ(Str(back), "mine");
}

// ---- DirBackend and crashes ---------------------------------------------------------------

TEST(DirBackendTest, AFullDiskLeavesNoBlobAndNoTemporary) {
  TempDir tmp;
  test::FaultEnv env;
  DirBackend b(&env, tmp.path());
  ASSERT_OK(b.Put("packs/old.pack", Span("kept")));
  env.FailWritesAfter(10);
  EXPECT_CODE(b.Put("packs/new.pack", test::RandomBytes(1000, 1)), Code::kIOError);
  EXPECT_CODE(b.PutIfAbsent("refs/k", test::RandomBytes(1000, 2)), Code::kIOError);
  env.ClearFaults();
  ASSERT_OK_AND_ASSIGN(auto names, env.List(tmp.path() + "/packs"));
  EXPECT_EQ(names, std::vector<std::string>{"old.pack"});
  ASSERT_OK_AND_ASSIGN(auto info, b.Stat("refs/k"));
  EXPECT_FALSE(info.has_value());
}

TEST(DirBackendTest, WhatAPutReportedStoredSurvivesAPowerLoss) {
  TempDir tmp;
  test::FaultEnv env;
  DirBackend b(&env, tmp.path());
  auto data = test::RandomBytes(50000, 3);
  ASSERT_OK(b.Put("packs/1.pack", data));
  ASSERT_OK(b.PutIfAbsent("refs/k", Span("root")));
  ASSERT_OK_AND_ASSIGN(uint64_t dropped, env.DropUnsyncedData());
  EXPECT_EQ(dropped, 0u);
  ASSERT_OK_AND_ASSIGN(auto back, b.ReadAll("packs/1.pack"));
  EXPECT_EQ(back, data);
}

TEST(DirBackendTest, AFailedSyncIsAFailedPut) {
  TempDir tmp;
  test::FaultEnv env;
  DirBackend b(&env, tmp.path());
  env.FailSyncs(EIO);
  EXPECT_CODE(b.Put("packs/1.pack", Span("x")), Code::kIOError);
  env.ClearFaults();
  ASSERT_OK_AND_ASSIGN(auto info, b.Stat("packs/1.pack"));
  EXPECT_FALSE(info.has_value());  // the temporary was never renamed into place
}

}  // namespace
}  // namespace stashfs
