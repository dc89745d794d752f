#include "store/objects.h"

#include <sys/stat.h>

#include "store/encoding.h"

namespace stashfs {

namespace {

constexpr std::string_view kTreeMagic = "STT1";
constexpr std::string_view kListMagic = "STL1";
constexpr std::string_view kLinksMagic = "STK1";
constexpr std::string_view kRootMagic = "STR1";

bool ValidType(uint8_t t) {
  return t >= 1 && t <= 7;
}

void EncodeAttrs(Encoder& e, const Attrs& a) {
  e.varint(a.mode);
  e.varint(a.uid);
  e.varint(a.gid);
  e.svarint(a.mtime.sec);
  e.varint(a.mtime.nsec);
  e.svarint(a.ctime.sec);
  e.varint(a.ctime.nsec);
  e.varint(a.xattrs.size());
  for (const auto& [name, value] : a.xattrs) {
    e.bytes(name);
    e.bytes(value);
  }
}

bool DecodeAttrs(Decoder& d, Attrs* a) {
  uint64_t mode = d.varint(), uid = d.varint(), gid = d.varint();
  if (mode > 07777 || uid > UINT32_MAX || gid > UINT32_MAX) return false;
  a->mode = static_cast<uint32_t>(mode);
  a->uid = static_cast<uint32_t>(uid);
  a->gid = static_cast<uint32_t>(gid);
  a->mtime.sec = d.svarint();
  uint64_t mns = d.varint();
  a->ctime.sec = d.svarint();
  uint64_t cns = d.varint();
  if (mns >= 1000000000 || cns >= 1000000000) return false;
  a->mtime.nsec = static_cast<uint32_t>(mns);
  a->ctime.nsec = static_cast<uint32_t>(cns);
  uint64_t n = d.varint();
  if (d.failed() || n > d.remaining()) return false;
  a->xattrs.clear();
  a->xattrs.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    std::string name = d.bytes(kXattrNameMax), value = d.bytes(kXattrValueMax);
    if (d.failed() || name.empty()) return false;
    if (!a->xattrs.empty() && a->xattrs.back().first >= name) return false;  // canonical order
    a->xattrs.emplace_back(std::move(name), std::move(value));
  }
  return !d.failed();
}

void EncodeChunks(Encoder& e, const std::vector<ChunkRef>& chunks) {
  e.varint(chunks.size());
  for (const auto& c : chunks) {
    e.hash(c.hash);
    e.varint(c.size);
  }
}

bool DecodeChunks(Decoder& d, std::vector<ChunkRef>* chunks, uint64_t* total) {
  uint64_t n = d.varint();
  if (d.failed() || n > d.remaining() / 33) return false;
  chunks->resize(n);
  *total = 0;
  for (auto& c : *chunks) {
    c.hash = d.hash();
    c.size = d.varint();
    if (c.size == 0 || c.size > UINT64_MAX - *total) return false;
    *total += c.size;
  }
  return !d.failed();
}

void EncodeContent(Encoder& e, const FileContent& c) {
  e.varint(c.size);
  if (c.list) {
    e.u8(2);
    e.hash(*c.list);
  } else if (!c.chunks.empty()) {
    e.u8(1);
    EncodeChunks(e, c.chunks);
  } else {
    e.u8(0);
    e.bytes(c.inline_data);
  }
}

bool DecodeContent(Decoder& d, FileContent* c) {
  c->size = d.varint();
  switch (d.u8()) {
    case 0:
      c->inline_data = d.bytes(kInlineMax);
      return !d.failed() && c->inline_data.size() == c->size;
    case 1: {
      uint64_t total = 0;
      if (!DecodeChunks(d, &c->chunks, &total)) return false;
      return total == c->size && !c->chunks.empty() && c->chunks.size() <= kDirectChunksMax;
    }
    case 2:
      c->list = d.hash();
      return !d.failed() && c->size > 0;
    default:
      return false;
  }
}

// The type-dependent part shared by TREE entries and LINKS records.
void EncodeBody(Encoder& e, EntryType type, const Attrs& a, const FileContent& content,
                const Hash& tree, const std::string& target) {
  EncodeAttrs(e, a);
  switch (type) {
    case EntryType::kFile:
      EncodeContent(e, content);
      break;
    case EntryType::kDir:
      e.hash(tree);  // the caller appends the subtree totals
      break;
    case EntryType::kSymlink:
      e.bytes(target);
      break;
    case EntryType::kCharDev:
    case EntryType::kBlockDev:
      e.varint(a.rdev);
      break;
    case EntryType::kFifo:
    case EntryType::kSocket:
      break;
  }
}

bool DecodeBody(Decoder& d, EntryType type, Attrs* a, FileContent* content, Hash* tree,
                std::string* target) {
  if (!DecodeAttrs(d, a)) return false;
  switch (type) {
    case EntryType::kFile:
      return DecodeContent(d, content);
    case EntryType::kDir:
      *tree = d.hash();
      break;
    case EntryType::kSymlink:
      *target = d.bytes(kSymlinkMax);
      if (target->empty()) return false;
      break;
    case EntryType::kCharDev:
    case EntryType::kBlockDev:
      a->rdev = d.varint();
      break;
    case EntryType::kFifo:
    case EntryType::kSocket:
      break;
  }
  return !d.failed();
}

void ContentChildren(const FileContent& c, std::vector<ChildRef>* out) {
  if (c.list) out->push_back({ObjectKind::kList, *c.list});
  for (const auto& ch : c.chunks)
    if (!ch.is_hole()) out->push_back({ObjectKind::kChunk, ch.hash});
}

}  // namespace

const char* KindName(ObjectKind k) {
  switch (k) {
    case ObjectKind::kChunk:
      return "chunk";
    case ObjectKind::kList:
      return "list";
    case ObjectKind::kTree:
      return "tree";
    case ObjectKind::kRoot:
      return "root";
    case ObjectKind::kLinks:
      return "links";
  }
  return "unknown";
}

bool KindHasChildren(ObjectKind k) {
  return k != ObjectKind::kChunk;
}

EntryType TypeFromMode(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return EntryType::kDir;
    case S_IFLNK:
      return EntryType::kSymlink;
    case S_IFIFO:
      return EntryType::kFifo;
    case S_IFCHR:
      return EntryType::kCharDev;
    case S_IFBLK:
      return EntryType::kBlockDev;
    case S_IFSOCK:
      return EntryType::kSocket;
    default:
      return EntryType::kFile;
  }
}

mode_t ModeTypeBits(EntryType t) {
  switch (t) {
    case EntryType::kFile:
      return S_IFREG;
    case EntryType::kDir:
      return S_IFDIR;
    case EntryType::kSymlink:
      return S_IFLNK;
    case EntryType::kFifo:
      return S_IFIFO;
    case EntryType::kCharDev:
      return S_IFCHR;
    case EntryType::kBlockDev:
      return S_IFBLK;
    case EntryType::kSocket:
      return S_IFSOCK;
  }
  return S_IFREG;
}

bool ValidEntryName(std::string_view name) {
  if (name.empty() || name.size() > kNameMax || name == "." || name == "..") return false;
  return name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

std::vector<uint8_t> EncodeTree(const Tree& t) {
  Encoder e;
  e.raw(kTreeMagic.data(), kTreeMagic.size());
  e.varint(t.entries.size());
  for (const auto& ent : t.entries) {
    e.bytes(ent.name);
    e.u8(static_cast<uint8_t>(ent.type));
    if (ent.link_id) {
      e.varint(1);
      e.varint(ent.link_id);
      continue;
    }
    e.varint(0);
    EncodeBody(e, ent.type, ent.attrs, ent.content, ent.tree, ent.target);
    if (ent.type == EntryType::kDir) {
      e.varint(ent.dir_bytes);
      e.varint(ent.dir_files);
      e.varint(ent.dir_subdirs);
    }
  }
  return e.take();
}

Result<Tree> DecodeTree(std::span<const uint8_t> data) {
  Decoder d(data);
  Tree t;
  auto bad = [](const char* why) {
    return Status::Corruption(std::string("bad tree object: ") + why);
  };
  if (!d.expect(kTreeMagic)) return bad("wrong magic");
  uint64_t n = d.varint();
  if (d.failed() || n > d.remaining()) return bad("truncated header");
  t.entries.resize(n);
  for (uint64_t i = 0; i < n; ++i) {
    TreeEntry& ent = t.entries[i];
    ent.name = d.bytes(kNameMax);
    if (!ValidEntryName(ent.name)) return bad("invalid entry name");
    if (i > 0 && t.entries[i - 1].name >= ent.name) return bad("entries not sorted");
    uint8_t type = d.u8();
    if (!ValidType(type)) return bad("unknown entry type");
    ent.type = static_cast<EntryType>(type);
    uint64_t flags = d.varint();
    if (flags > 1) return bad("unknown entry flags");
    if (flags & 1) {
      ent.link_id = d.varint();
      if (ent.link_id == 0 || ent.type == EntryType::kDir) return bad("invalid hard link");
      continue;
    }
    if (!DecodeBody(d, ent.type, &ent.attrs, &ent.content, &ent.tree, &ent.target))
      return bad("malformed entry");
    if (ent.type == EntryType::kDir) {
      ent.dir_bytes = d.varint();
      ent.dir_files = d.varint();
      ent.dir_subdirs = d.varint();
      if (d.failed()) return bad("malformed directory entry");
    }
  }
  if (d.failed() || !d.done()) return bad("trailing or missing bytes");
  return t;
}

std::vector<uint8_t> EncodeList(const std::vector<ChunkRef>& chunks) {
  Encoder e;
  e.raw(kListMagic.data(), kListMagic.size());
  EncodeChunks(e, chunks);
  return e.take();
}

Result<std::vector<ChunkRef>> DecodeList(std::span<const uint8_t> data) {
  Decoder d(data);
  std::vector<ChunkRef> chunks;
  uint64_t total = 0;
  if (!d.expect(kListMagic) || !DecodeChunks(d, &chunks, &total) || !d.done())
    return Status::Corruption("bad chunk list object");
  return chunks;
}

std::vector<uint8_t> EncodeLinks(const std::vector<LinkRecord>& links) {
  Encoder e;
  e.raw(kLinksMagic.data(), kLinksMagic.size());
  e.varint(links.size());
  for (const auto& l : links) {
    e.varint(l.link_id);
    e.varint(l.nlink);
    e.u8(static_cast<uint8_t>(l.type));
    EncodeBody(e, l.type, l.attrs, l.content, Hash{}, l.target);
  }
  return e.take();
}

Result<std::vector<LinkRecord>> DecodeLinks(std::span<const uint8_t> data) {
  Decoder d(data);
  auto bad = Status::Corruption("bad hard-link table object");
  if (!d.expect(kLinksMagic)) return bad;
  uint64_t n = d.varint();
  if (d.failed() || n > d.remaining()) return bad;
  std::vector<LinkRecord> links(n);
  Hash unused;
  for (uint64_t i = 0; i < n; ++i) {
    LinkRecord& l = links[i];
    l.link_id = d.varint();
    uint64_t nlink = d.varint();
    uint8_t type = d.u8();
    if (l.link_id == 0 || nlink > UINT32_MAX || !ValidType(type) || type == 2) return bad;
    if (i > 0 && links[i - 1].link_id >= l.link_id) return bad;
    l.nlink = static_cast<uint32_t>(nlink);
    l.type = static_cast<EntryType>(type);
    if (!DecodeBody(d, l.type, &l.attrs, &l.content, &unused, &l.target)) return bad;
  }
  if (d.failed() || !d.done()) return bad;
  return links;
}

std::vector<uint8_t> EncodeRoot(const RootRecord& r) {
  Encoder e;
  e.raw(kRootMagic.data(), kRootMagic.size());
  EncodeAttrs(e, r.attrs);
  e.hash(r.tree);
  e.varint(r.total_bytes);
  e.varint(r.total_files);
  e.varint(r.subdirs);
  e.varint(r.link_buckets.size());
  for (const auto& [bucket, h] : r.link_buckets) {
    e.varint(bucket);
    e.hash(h);
  }
  return e.take();
}

Result<RootRecord> DecodeRoot(std::span<const uint8_t> data) {
  Decoder d(data);
  RootRecord r;
  auto bad = Status::Corruption("bad root object");
  if (!d.expect(kRootMagic) || !DecodeAttrs(d, &r.attrs)) return bad;
  r.tree = d.hash();
  r.total_bytes = d.varint();
  r.total_files = d.varint();
  r.subdirs = d.varint();
  uint64_t n = d.varint();
  if (d.failed() || n > kLinkBuckets) return bad;
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t bucket = d.varint();
    Hash h = d.hash();
    if (bucket >= kLinkBuckets || (i > 0 && r.link_buckets.back().first >= bucket)) return bad;
    r.link_buckets.emplace_back(static_cast<uint32_t>(bucket), h);
  }
  if (d.failed() || !d.done()) return bad;
  return r;
}

Result<std::vector<ChildRef>> ChildrenOf(ObjectKind kind, std::span<const uint8_t> data) {
  std::vector<ChildRef> out;
  switch (kind) {
    case ObjectKind::kChunk:
      break;
    case ObjectKind::kList: {
      ASSIGN_OR_RETURN(auto chunks, DecodeList(data));
      for (const auto& c : chunks)
        if (!c.is_hole()) out.push_back({ObjectKind::kChunk, c.hash});
      break;
    }
    case ObjectKind::kTree: {
      ASSIGN_OR_RETURN(auto tree, DecodeTree(data));
      for (const auto& e : tree.entries) {
        if (e.link_id) continue;
        if (e.type == EntryType::kDir) out.push_back({ObjectKind::kTree, e.tree});
        if (e.type == EntryType::kFile) ContentChildren(e.content, &out);
      }
      break;
    }
    case ObjectKind::kLinks: {
      ASSIGN_OR_RETURN(auto links, DecodeLinks(data));
      for (const auto& l : links)
        if (l.type == EntryType::kFile) ContentChildren(l.content, &out);
      break;
    }
    case ObjectKind::kRoot: {
      ASSIGN_OR_RETURN(auto root, DecodeRoot(data));
      out.push_back({ObjectKind::kTree, root.tree});
      for (const auto& [bucket, h] : root.link_buckets)
        out.push_back({ObjectKind::kLinks, h});
      break;
    }
  }
  return out;
}

}  // namespace stashfs
