#include "store/objects.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "store/encoding.h"
#include "test_util.h"

namespace stashfs {
namespace {

Hash H(std::string_view s) {
  return Hash::Of(s);
}

Attrs MakeAttrs(uint32_t mode, int64_t sec, uint32_t nsec = 0, Xattrs x = {}) {
  Attrs a;
  a.mode = mode;
  a.uid = 1000;
  a.gid = 100;
  a.mtime = {sec, nsec};
  a.ctime = {sec + 1, nsec / 2};
  a.xattrs = std::move(x);
  return a;
}

TreeEntry File(std::string name, FileContent c, Attrs a = MakeAttrs(0644, 1700000000)) {
  TreeEntry e;
  e.name = std::move(name);
  e.type = EntryType::kFile;
  e.attrs = std::move(a);
  e.content = std::move(c);
  return e;
}

FileContent Inline(std::string data) {
  FileContent c;
  c.size = data.size();
  c.inline_data = std::move(data);
  return c;
}

FileContent Direct(std::vector<ChunkRef> chunks) {
  FileContent c;
  for (const auto& ch : chunks)
    c.size += ch.size;
  c.chunks = std::move(chunks);
  return c;
}

FileContent Listed(uint64_t size, Hash list) {
  FileContent c;
  c.size = size;
  c.list = list;
  return c;
}

TreeEntry Dir(std::string name, Hash tree) {
  TreeEntry e;
  e.name = std::move(name);
  e.type = EntryType::kDir;
  e.attrs = MakeAttrs(0755, 1600000000, 5);
  e.tree = tree;
  e.dir_bytes = 123456789;
  e.dir_files = 77;
  e.dir_subdirs = 3;
  return e;
}

TreeEntry Special(std::string name, EntryType type, uint64_t rdev = 0) {
  TreeEntry e;
  e.name = std::move(name);
  e.type = type;
  e.attrs = MakeAttrs(0600, 1);
  e.attrs.rdev = rdev;
  return e;
}

TreeEntry HardLink(std::string name, uint64_t link_id) {
  TreeEntry e;
  e.name = std::move(name);
  e.type = EntryType::kFile;
  e.link_id = link_id;
  return e;
}

// One of everything a TREE can hold, sorted by name.
Tree FullTree() {
  Tree t;
  t.entries.push_back(Special("blk", EntryType::kBlockDev, 0x0801));
  t.entries.push_back(Special("chr", EntryType::kCharDev, 0x0103));
  t.entries.push_back(Dir("dir", H("subtree")));
  t.entries.push_back(File("empty", Inline("")));
  t.entries.push_back(Special("fifo", EntryType::kFifo));
  t.entries.push_back(HardLink("hardlink", 42));
  t.entries.push_back(File("holes", Direct({{H("a"), 100}, {Hash{}, 50}, {H("a"), 100}})));
  t.entries.push_back(File("inline", Inline("hello"),
                           MakeAttrs(07777, -86400, 999999999,
                                     {{"security.capability", std::string("\0\1\2", 3)},
                                      {"user.a", "1"},
                                      {"user.empty", ""}})));
  t.entries.push_back(File("list", Listed(uint64_t{5} << 32, H("list"))));
  t.entries.push_back(File(std::string(kNameMax, 'n'), Inline(std::string(kInlineMax, 'x'))));
  t.entries.push_back(Special("sock", EntryType::kSocket));
  TreeEntry link = Special("symlink", EntryType::kSymlink);
  link.target = "../some/where";
  t.entries.push_back(link);
  t.entries.push_back(File("\xc3\xa9t\xc3\xa9", Inline("utf-8 name sorts after ASCII")));
  t.entries.push_back(HardLink("\xff", 7));
  return t;
}

std::vector<LinkRecord> FullLinks() {
  std::vector<LinkRecord> links(3);
  links[0].link_id = 7;
  links[0].nlink = 2;
  links[0].attrs = MakeAttrs(0644, 5, 0, {{"user.x", "y"}});
  links[0].content = Direct({{H("c1"), 10}, {Hash{}, 10}});
  links[1].link_id = 42;
  links[1].nlink = 3;
  links[1].type = EntryType::kSymlink;
  links[1].attrs = MakeAttrs(0777, 6);
  links[1].target = "t";
  links[2].link_id = 1000000;
  links[2].nlink = UINT32_MAX;
  links[2].attrs = MakeAttrs(0600, 7);
  links[2].content = Listed(99999999, H("list2"));
  return links;
}

RootRecord FullRoot() {
  RootRecord r;
  r.attrs = MakeAttrs(0755, 1700000000, 1);
  r.tree = H("top");
  r.total_bytes = 1ull << 40;
  r.total_files = 123456;
  r.subdirs = 12;
  r.link_buckets = {{7, H("links7")}, {42, H("links42")}, {kLinkBuckets - 1, H("links255")}};
  return r;
}

std::vector<ChunkRef> FullList() {
  return {{H("a"), 1}, {Hash{}, 4096}, {H("b"), 1 << 20}, {H("a"), 1}};
}

// ---- round trips and canonical form -------------------------------------------------------

TEST(ObjectsTest, TreeRoundTrip) {
  Tree t = FullTree();
  auto enc = EncodeTree(t);
  ASSERT_OK_AND_ASSIGN(Tree back, DecodeTree(enc));
  EXPECT_EQ(back, t);
  EXPECT_EQ(EncodeTree(back), enc);

  ASSERT_OK_AND_ASSIGN(Tree empty, DecodeTree(EncodeTree(Tree{})));
  EXPECT_TRUE(empty.entries.empty());
}

TEST(ObjectsTest, ListRoundTrip) {
  auto list = FullList();
  auto enc = EncodeList(list);
  ASSERT_OK_AND_ASSIGN(auto back, DecodeList(enc));
  EXPECT_EQ(back, list);
  ASSERT_OK_AND_ASSIGN(auto empty, DecodeList(EncodeList({})));
  EXPECT_TRUE(empty.empty());
}

TEST(ObjectsTest, LinksRoundTrip) {
  auto links = FullLinks();
  auto enc = EncodeLinks(links);
  ASSERT_OK_AND_ASSIGN(auto back, DecodeLinks(enc));
  EXPECT_EQ(back, links);
  EXPECT_EQ(EncodeLinks(back), enc);
}

TEST(ObjectsTest, RootRoundTrip) {
  RootRecord r = FullRoot();
  auto enc = EncodeRoot(r);
  ASSERT_OK_AND_ASSIGN(RootRecord back, DecodeRoot(enc));
  EXPECT_EQ(back, r);
  ASSERT_OK_AND_ASSIGN(RootRecord plain, DecodeRoot(EncodeRoot(RootRecord{})));
  EXPECT_EQ(plain, RootRecord{});
}

TEST(ObjectsTest, EncodingIsCanonical) {
  // Equal values encode to equal bytes, built separately.
  EXPECT_EQ(EncodeTree(FullTree()), EncodeTree(FullTree()));
  EXPECT_EQ(EncodeLinks(FullLinks()), EncodeLinks(FullLinks()));
  EXPECT_EQ(EncodeRoot(FullRoot()), EncodeRoot(FullRoot()));
  EXPECT_EQ(EncodeList(FullList()), EncodeList(FullList()));
  // Different values encode differently (the hash is the identity).
  Tree t = FullTree();
  t.entries[3].attrs.mtime.nsec += 1;
  EXPECT_NE(EncodeTree(t), EncodeTree(FullTree()));
}

TEST(ObjectsTest, GoldenBytes) {
  // The format is pinned: a change here changes the name of every stored tree.
  Tree t;
  TreeEntry e = File("a", Inline("hi"));
  e.attrs = Attrs{};
  e.attrs.mode = 0644;
  e.attrs.uid = 1000;
  e.attrs.mtime = {1, 5};
  e.attrs.ctime = {-1, 0};
  t.entries.push_back(e);
  const std::vector<uint8_t> want = {'S',  'T',  'T',  '1',  0x01, 0x01, 'a',  0x01,
                                     0x00, 0xA4, 0x03, 0xE8, 0x07, 0x00, 0x02, 0x05,
                                     0x01, 0x00, 0x00, 0x02, 0x00, 0x02, 'h',  'i'};
  EXPECT_EQ(EncodeTree(t), want);
  EXPECT_EQ(EncodeTree(Tree{}), (std::vector<uint8_t>{'S', 'T', 'T', '1', 0}));

  Hash h = H("x");
  std::vector<uint8_t> list = {'S', 'T', 'L', '1', 0x01};
  list.insert(list.end(), h.bytes.begin(), h.bytes.end());
  list.push_back(0xAC);  // 300 as a varint: 0b10'0101100 -> 0xAC 0x02
  list.push_back(0x02);
  EXPECT_EQ(EncodeList({{h, 300}}), list);
}

// ---- rejection of bad input ---------------------------------------------------------------

template <typename Decode>
void ExpectAllPrefixesRejected(const std::vector<uint8_t>& enc, Decode decode, const char* what) {
  for (size_t n = 0; n < enc.size(); ++n) {
    std::span<const uint8_t> prefix(enc.data(), n);
    auto r = decode(prefix);
    EXPECT_FALSE(r.ok()) << what << " prefix of " << n << " of " << enc.size() << " bytes";
    EXPECT_CODE(r, Code::kCorruption);
  }
}

TEST(ObjectsTest, TruncatedInputIsCorruption) {
  ExpectAllPrefixesRejected(EncodeTree(FullTree()), DecodeTree, "tree");
  ExpectAllPrefixesRejected(EncodeList(FullList()), DecodeList, "list");
  ExpectAllPrefixesRejected(EncodeLinks(FullLinks()), DecodeLinks, "links");
  ExpectAllPrefixesRejected(EncodeRoot(FullRoot()), DecodeRoot, "root");
}

TEST(ObjectsTest, TrailingBytesAndWrongMagicAreCorruption) {
  auto with_tail = [](std::vector<uint8_t> v) {
    v.push_back(0);
    return v;
  };
  EXPECT_CODE(DecodeTree(with_tail(EncodeTree(FullTree()))), Code::kCorruption);
  EXPECT_CODE(DecodeList(with_tail(EncodeList(FullList()))), Code::kCorruption);
  EXPECT_CODE(DecodeLinks(with_tail(EncodeLinks(FullLinks()))), Code::kCorruption);
  EXPECT_CODE(DecodeRoot(with_tail(EncodeRoot(FullRoot()))), Code::kCorruption);
  // Each decoder wants its own magic.
  EXPECT_CODE(DecodeTree(EncodeList({})), Code::kCorruption);
  EXPECT_CODE(DecodeList(EncodeTree({})), Code::kCorruption);
  EXPECT_CODE(DecodeLinks(EncodeRoot({})), Code::kCorruption);
  EXPECT_CODE(DecodeRoot(EncodeLinks({})), Code::kCorruption);
}

Status DecodeOne(const TreeEntry& e) {
  return DecodeTree(EncodeTree(Tree{{e}})).status();
}

TEST(ObjectsTest, BadNamesAreCorruption) {
  for (const std::string& name :
       {std::string(), std::string("."), std::string(".."), std::string("a/b"), std::string("/"),
        std::string("a\0b", 3), std::string(1, '\0'), std::string(kNameMax + 1, 'n')}) {
    EXPECT_FALSE(ValidEntryName(name)) << name;
    EXPECT_CODE(DecodeOne(File(name, Inline("x"))), Code::kCorruption);
  }
  for (const std::string& name : {std::string("..."), std::string(".a"), std::string(" "),
                                  std::string(kNameMax, 'n'), std::string("\n")}) {
    EXPECT_TRUE(ValidEntryName(name)) << name;
    EXPECT_OK(DecodeOne(File(name, Inline("x"))));
  }
}

TEST(ObjectsTest, UnsortedOrDuplicateEntriesAreCorruption) {
  Tree t;
  t.entries = {File("b", Inline("")), File("a", Inline(""))};
  EXPECT_CODE(DecodeTree(EncodeTree(t)), Code::kCorruption);
  t.entries = {File("a", Inline("")), File("a", Inline("1"))};
  EXPECT_CODE(DecodeTree(EncodeTree(t)), Code::kCorruption);
  // Bytewise order: "B" < "a" and "a" < "\xff".
  t.entries = {File("a", Inline("")), File("B", Inline(""))};
  EXPECT_CODE(DecodeTree(EncodeTree(t)), Code::kCorruption);
  t.entries = {File("B", Inline("")), File("a", Inline("")), File("\xff", Inline(""))};
  EXPECT_OK(DecodeTree(EncodeTree(t)));
}

TEST(ObjectsTest, BadFileContentIsCorruption) {
  // Inline data over the limit, or not matching the size.
  EXPECT_CODE(DecodeOne(File("f", Inline(std::string(kInlineMax + 1, 'x')))), Code::kCorruption);
  FileContent c = Inline("hi");
  c.size = 3;
  EXPECT_CODE(DecodeOne(File("f", c)), Code::kCorruption);
  // Chunk sizes not summing to the file size.
  c = Direct({{H("a"), 100}, {H("b"), 50}});
  c.size = 151;
  EXPECT_CODE(DecodeOne(File("f", c)), Code::kCorruption);
  c.size = 149;
  EXPECT_CODE(DecodeOne(File("f", c)), Code::kCorruption);
  c.size = 150;
  EXPECT_OK(DecodeOne(File("f", c)));
  // A zero-length chunk.
  c = Direct({{H("a"), 100}, {H("b"), 0}});
  EXPECT_CODE(DecodeOne(File("f", c)), Code::kCorruption);
  // More direct chunks than an entry may hold.
  std::vector<ChunkRef> many(kDirectChunksMax + 1, ChunkRef{H("a"), 1});
  EXPECT_CODE(DecodeOne(File("f", Direct(many))), Code::kCorruption);
  many.pop_back();
  EXPECT_OK(DecodeOne(File("f", Direct(many))));
  // A list for an empty file.
  EXPECT_CODE(DecodeOne(File("f", Listed(0, H("l")))), Code::kCorruption);
}

TEST(ObjectsTest, BadAttrsAreCorruption) {
  TreeEntry e = File("f", Inline(""));
  e.attrs.mode = 010000;  // a type bit: mode holds permission bits only
  EXPECT_CODE(DecodeOne(e), Code::kCorruption);
  e = File("f", Inline(""));
  e.attrs.mtime.nsec = 1000000000;
  EXPECT_CODE(DecodeOne(e), Code::kCorruption);
  e = File("f", Inline(""));
  e.attrs.ctime.nsec = 1000000000;
  EXPECT_CODE(DecodeOne(e), Code::kCorruption);
  // xattrs must be sorted, unique, named, and within limits.
  for (const Xattrs& x :
       {Xattrs{{"user.b", "1"}, {"user.a", "2"}}, Xattrs{{"user.a", "1"}, {"user.a", "2"}},
        Xattrs{{"", "1"}}, Xattrs{{std::string(kXattrNameMax + 1, 'x'), "1"}},
        Xattrs{{"user.big", std::string(kXattrValueMax + 1, 'v')}}}) {
    e = File("f", Inline(""));
    e.attrs.xattrs = x;
    EXPECT_CODE(DecodeOne(e), Code::kCorruption) << x.front().first.substr(0, 20);
  }
  e = File("f", Inline(""));
  e.attrs.xattrs = {{std::string(kXattrNameMax, 'x'), std::string(kXattrValueMax, 'v')}};
  EXPECT_OK(DecodeOne(e));
}

TEST(ObjectsTest, BadSymlinksAreCorruption) {
  TreeEntry e = Special("l", EntryType::kSymlink);
  EXPECT_CODE(DecodeOne(e), Code::kCorruption);  // empty target
  e.target = std::string(kSymlinkMax + 1, 't');
  EXPECT_CODE(DecodeOne(e), Code::kCorruption);
  e.target = std::string(kSymlinkMax, 't');
  EXPECT_OK(DecodeOne(e));
}

// Hand-made encodings for what the encoder cannot produce.
std::vector<uint8_t> RawTree(const std::function<void(Encoder&)>& entries, uint64_t count = 1) {
  Encoder e;
  e.raw("STT1", 4);
  e.varint(count);
  entries(e);
  return e.take();
}
void RawAttrs(Encoder& e) {
  for (int i = 0; i < 8; ++i)
    e.varint(0);  // mode uid gid mtime(2) ctime(2) xattr count
}

TEST(ObjectsTest, BadEntryHeadersAreCorruption) {
  // Sanity check of the hand encoding: a valid empty inline file.
  auto good = RawTree([](Encoder& e) {
    e.bytes("f");
    e.u8(1);
    e.varint(0);
    RawAttrs(e);
    e.varint(0);
    e.u8(0);
    e.bytes("");
  });
  ASSERT_OK(DecodeTree(good));
  for (uint8_t type : {0, 8, 255}) {
    auto bad = RawTree([type](Encoder& e) {
      e.bytes("f");
      e.u8(type);
      e.varint(0);
      RawAttrs(e);
    });
    EXPECT_CODE(DecodeTree(bad), Code::kCorruption) << int{type};
  }
  // Unknown flags.
  EXPECT_CODE(DecodeTree(RawTree([](Encoder& e) {
                e.bytes("f");
                e.u8(1);
                e.varint(2);
                RawAttrs(e);
              })),
              Code::kCorruption);
  // A hard link with id 0, and a hard-linked directory.
  EXPECT_CODE(DecodeTree(RawTree([](Encoder& e) {
                e.bytes("f");
                e.u8(1);
                e.varint(1);
                e.varint(0);
              })),
              Code::kCorruption);
  EXPECT_CODE(DecodeTree(RawTree([](Encoder& e) {
                e.bytes("d");
                e.u8(2);
                e.varint(1);
                e.varint(5);
              })),
              Code::kCorruption);
  // Unknown content kind.
  EXPECT_CODE(DecodeTree(RawTree([](Encoder& e) {
                e.bytes("f");
                e.u8(1);
                e.varint(0);
                RawAttrs(e);
                e.varint(0);
                e.u8(3);
              })),
              Code::kCorruption);
  // Direct chunks, but none of them.
  EXPECT_CODE(DecodeTree(RawTree([](Encoder& e) {
                e.bytes("f");
                e.u8(1);
                e.varint(0);
                RawAttrs(e);
                e.varint(0);
                e.u8(1);
                e.varint(0);
              })),
              Code::kCorruption);
  // uid over 32 bits.
  EXPECT_CODE(DecodeTree(RawTree([](Encoder& e) {
                e.bytes("f");
                e.u8(1);
                e.varint(0);
                e.varint(0644);
                e.varint(uint64_t{1} << 32);
                for (int i = 0; i < 6; ++i)
                  e.varint(0);
                e.varint(0);
                e.u8(0);
                e.bytes("");
              })),
              Code::kCorruption);
}

TEST(ObjectsTest, HugeCountsAreCorruptionNotAllocations) {
  // Entry, chunk, xattr and link counts far beyond the input are refused up front.
  EXPECT_CODE(DecodeTree(RawTree([](Encoder&) {}, uint64_t{1} << 62)), Code::kCorruption);
  EXPECT_CODE(DecodeTree(RawTree([](Encoder& e) {
                e.bytes("f");
                e.u8(1);
                e.varint(0);
                for (int i = 0; i < 7; ++i)
                  e.varint(0);
                e.varint(uint64_t{1} << 60);  // xattrs
              })),
              Code::kCorruption);
  EXPECT_CODE(DecodeTree(RawTree([](Encoder& e) {
                e.bytes("f");
                e.u8(1);
                e.varint(0);
                RawAttrs(e);
                e.varint(100);
                e.u8(1);
                e.varint(uint64_t{1} << 58);  // chunks
              })),
              Code::kCorruption);
  Encoder list;
  list.raw("STL1", 4);
  list.varint(UINT64_MAX);
  EXPECT_CODE(DecodeList(list.take()), Code::kCorruption);
  Encoder links;
  links.raw("STK1", 4);
  links.varint(uint64_t{1} << 40);
  EXPECT_CODE(DecodeLinks(links.take()), Code::kCorruption);
  // An over-long varint (more than 64 bits of continuation).
  Encoder varint;
  varint.raw("STL1", 4);
  for (int i = 0; i < 11; ++i)
    varint.u8(0x80);
  varint.u8(0);
  EXPECT_CODE(DecodeList(varint.take()), Code::kCorruption);
}

TEST(ObjectsTest, BadListsAreCorruption) {
  EXPECT_CODE(DecodeList(EncodeList({{H("a"), 0}})), Code::kCorruption);
  // Sizes whose sum overflows 64 bits.
  EXPECT_CODE(DecodeList(EncodeList({{H("a"), uint64_t{1} << 63}, {H("b"), uint64_t{1} << 63}})),
              Code::kCorruption);
  EXPECT_OK(
      DecodeList(EncodeList({{H("a"), uint64_t{1} << 63}, {H("b"), (uint64_t{1} << 63) - 1}})));
}

TEST(ObjectsTest, BadLinksAreCorruption) {
  auto links = FullLinks();
  std::swap(links[0], links[1]);  // unsorted ids
  EXPECT_CODE(DecodeLinks(EncodeLinks(links)), Code::kCorruption);
  links = FullLinks();
  links[1].link_id = links[0].link_id;  // duplicate id
  EXPECT_CODE(DecodeLinks(EncodeLinks(links)), Code::kCorruption);
  links = FullLinks();
  links[0].link_id = 0;
  EXPECT_CODE(DecodeLinks(EncodeLinks(links)), Code::kCorruption);
  links = FullLinks();
  links[2].type = EntryType::kDir;  // directories cannot be hard-linked
  EXPECT_CODE(DecodeLinks(EncodeLinks(links)), Code::kCorruption);
  links = FullLinks();
  links[0].content.size += 1;
  EXPECT_CODE(DecodeLinks(EncodeLinks(links)), Code::kCorruption);
  Encoder e;
  e.raw("STK1", 4);
  e.varint(1);
  e.varint(1);
  e.varint(uint64_t{1} << 32);  // nlink over 32 bits
  e.u8(1);
  RawAttrs(e);
  e.varint(0);
  e.u8(0);
  e.bytes("");
  EXPECT_CODE(DecodeLinks(e.take()), Code::kCorruption);
}

TEST(ObjectsTest, BadRootsAreCorruption) {
  RootRecord r = FullRoot();
  r.link_buckets.back().first = kLinkBuckets;  // no such bucket
  EXPECT_CODE(DecodeRoot(EncodeRoot(r)), Code::kCorruption);
  r = FullRoot();
  std::swap(r.link_buckets[0], r.link_buckets[1]);
  EXPECT_CODE(DecodeRoot(EncodeRoot(r)), Code::kCorruption);
  r = FullRoot();
  r.link_buckets[1].first = r.link_buckets[0].first;
  EXPECT_CODE(DecodeRoot(EncodeRoot(r)), Code::kCorruption);
  r = FullRoot();
  r.link_buckets.clear();
  for (uint32_t b = 0; b <= kLinkBuckets; ++b)
    r.link_buckets.emplace_back(b, H("x"));
  EXPECT_CODE(DecodeRoot(EncodeRoot(r)), Code::kCorruption);
  r.link_buckets.pop_back();
  EXPECT_OK(DecodeRoot(EncodeRoot(r)));
  r = FullRoot();
  r.attrs.mode = 0170000;
  EXPECT_CODE(DecodeRoot(EncodeRoot(r)), Code::kCorruption);
}

// Decodes a possibly-damaged encoding of `kind`: it must fail with Corruption or succeed, and
// what it yields must survive a round trip. Returns whether it decoded.
bool CheckMutant(ObjectKind kind, std::span<const uint8_t> data) {
  auto children = ChildrenOf(kind, data);
  if (!children.ok()) {
    EXPECT_CODE(children, Code::kCorruption);
  }
  switch (kind) {
    case ObjectKind::kTree: {
      auto r = DecodeTree(data);
      EXPECT_EQ(r.ok(), children.ok());
      if (!r.ok()) {
        EXPECT_CODE(r, Code::kCorruption);
        return false;
      }
      auto again = DecodeTree(EncodeTree(*r));
      EXPECT_TRUE(again.ok() && *again == *r);
      return true;
    }
    case ObjectKind::kList: {
      auto r = DecodeList(data);
      EXPECT_EQ(r.ok(), children.ok());
      if (!r.ok()) {
        EXPECT_CODE(r, Code::kCorruption);
        return false;
      }
      auto again = DecodeList(EncodeList(*r));
      EXPECT_TRUE(again.ok() && *again == *r);
      return true;
    }
    case ObjectKind::kLinks: {
      auto r = DecodeLinks(data);
      EXPECT_EQ(r.ok(), children.ok());
      if (!r.ok()) {
        EXPECT_CODE(r, Code::kCorruption);
        return false;
      }
      auto again = DecodeLinks(EncodeLinks(*r));
      EXPECT_TRUE(again.ok() && *again == *r);
      return true;
    }
    case ObjectKind::kRoot: {
      auto r = DecodeRoot(data);
      EXPECT_EQ(r.ok(), children.ok());
      if (!r.ok()) {
        EXPECT_CODE(r, Code::kCorruption);
        return false;
      }
      auto again = DecodeRoot(EncodeRoot(*r));
      EXPECT_TRUE(again.ok() && *again == *r);
      return true;
    }
    case ObjectKind::kChunk:
      break;
  }
  return true;
}

TEST(ObjectsTest, RandomMutationsFailCleanly) {
  // Run under the ASan/UBSan build too: a decoder must never read out of bounds, overflow or
  // allocate without bound, whatever the bytes.
  std::mt19937_64 rng(20240601);
  const std::pair<ObjectKind, std::vector<uint8_t>> valid[] = {
      {ObjectKind::kTree, EncodeTree(FullTree())},
      {ObjectKind::kList, EncodeList(FullList())},
      {ObjectKind::kLinks, EncodeLinks(FullLinks())},
      {ObjectKind::kRoot, EncodeRoot(FullRoot())},
  };
  for (const auto& [kind, enc] : valid) {
    ASSERT_TRUE(CheckMutant(kind, enc));
    int decoded = 0;
    const int kRounds = 3000;
    for (int round = 0; round < kRounds; ++round) {
      std::vector<uint8_t> m = enc;
      int edits = 1 + static_cast<int>(rng() % 3);
      for (int i = 0; i < edits && !m.empty(); ++i) {
        size_t at = rng() % m.size();
        switch (rng() % 6) {
          case 0:
            m[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
            break;
          case 1:
            m[at] = static_cast<uint8_t>(rng());
            break;
          case 2:
            m.resize(at);
            break;
          case 3:
            m.insert(m.begin() + static_cast<std::ptrdiff_t>(at), static_cast<uint8_t>(rng()));
            break;
          case 4:
            m.erase(m.begin() + static_cast<std::ptrdiff_t>(at));
            break;
          case 5:  // a large varint where a small one was
            m[at] = 0xff;
            break;
        }
      }
      decoded += CheckMutant(kind, m);
      if (::testing::Test::HasFailure()) {
        ADD_FAILURE() << KindName(kind) << " mutant in round " << round;
        return;
      }
    }
    // Most damage is caught by the decoders themselves (the rest only by the hash).
    EXPECT_LT(decoded, kRounds) << KindName(kind);
  }
}

// ---- children -------------------------------------------------------------------------------

std::vector<std::pair<ObjectKind, Hash>> Pairs(const std::vector<ChildRef>& refs) {
  std::vector<std::pair<ObjectKind, Hash>> out;
  for (const auto& r : refs)
    out.emplace_back(r.kind, r.hash);
  return out;
}

TEST(ObjectsTest, ChildrenOfTree) {
  Tree t;
  t.entries.push_back(Dir("d1", H("sub")));
  t.entries.push_back(Dir("d2", H("sub")));  // the same subtree twice: two references
  t.entries.push_back(
      File("direct", Direct({{H("c1"), 10}, {Hash{}, 5}, {H("c1"), 10}, {H("c2"), 1}})));
  t.entries.push_back(HardLink("hl", 3));  // its data is referenced by the LINKS bucket
  t.entries.push_back(File("inline", Inline("abc")));
  t.entries.push_back(File("listed", Listed(1000, H("list"))));
  TreeEntry l = Special("sym", EntryType::kSymlink);
  l.target = "x";
  t.entries.push_back(l);
  ASSERT_OK_AND_ASSIGN(auto kids, ChildrenOf(ObjectKind::kTree, EncodeTree(t)));
  using P = std::pair<ObjectKind, Hash>;
  EXPECT_EQ(Pairs(kids), (std::vector<P>{{ObjectKind::kTree, H("sub")},
                                         {ObjectKind::kTree, H("sub")},
                                         {ObjectKind::kChunk, H("c1")},
                                         {ObjectKind::kChunk, H("c1")},
                                         {ObjectKind::kChunk, H("c2")},
                                         {ObjectKind::kList, H("list")}}));
}

TEST(ObjectsTest, ChildrenOfOtherKinds) {
  using P = std::pair<ObjectKind, Hash>;
  ASSERT_OK_AND_ASSIGN(auto list, ChildrenOf(ObjectKind::kList, EncodeList(FullList())));
  EXPECT_EQ(Pairs(list), (std::vector<P>{{ObjectKind::kChunk, H("a")},
                                         {ObjectKind::kChunk, H("b")},
                                         {ObjectKind::kChunk, H("a")}}));
  ASSERT_OK_AND_ASSIGN(auto links, ChildrenOf(ObjectKind::kLinks, EncodeLinks(FullLinks())));
  EXPECT_EQ(Pairs(links),
            (std::vector<P>{{ObjectKind::kChunk, H("c1")}, {ObjectKind::kList, H("list2")}}));
  ASSERT_OK_AND_ASSIGN(auto root, ChildrenOf(ObjectKind::kRoot, EncodeRoot(FullRoot())));
  EXPECT_EQ(Pairs(root), (std::vector<P>{{ObjectKind::kTree, H("top")},
                                         {ObjectKind::kLinks, H("links7")},
                                         {ObjectKind::kLinks, H("links42")},
                                         {ObjectKind::kLinks, H("links255")}}));
  // Chunks have no children, whatever their bytes.
  ASSERT_OK_AND_ASSIGN(auto chunk, ChildrenOf(ObjectKind::kChunk, test::Span("STT1 not a tree")));
  EXPECT_TRUE(chunk.empty());
  EXPECT_FALSE(KindHasChildren(ObjectKind::kChunk));
  EXPECT_TRUE(KindHasChildren(ObjectKind::kTree));
  // The wrong kind for the bytes is Corruption.
  EXPECT_CODE(ChildrenOf(ObjectKind::kRoot, EncodeTree(FullTree())), Code::kCorruption);
}

TEST(ObjectsTest, ModesKindsAndBuckets) {
  for (EntryType t : {EntryType::kFile, EntryType::kDir, EntryType::kSymlink, EntryType::kFifo,
                      EntryType::kCharDev, EntryType::kBlockDev, EntryType::kSocket}) {
    EXPECT_EQ(TypeFromMode(ModeTypeBits(t) | 0644), t);
  }
  EXPECT_EQ(ModeTypeBits(EntryType::kDir), static_cast<mode_t>(S_IFDIR));
  EXPECT_STREQ(KindName(ObjectKind::kChunk), "chunk");
  EXPECT_STREQ(KindName(ObjectKind::kLinks), "links");
  EXPECT_EQ(LinkBucketOf(1), 1u);
  EXPECT_EQ(LinkBucketOf(kLinkBuckets + 5), 5u);
}

}  // namespace
}  // namespace stashfs
