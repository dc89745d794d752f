// The statements of gc, prune and fsck (see catalog_maintenance.h). The SQL text is kept byte
// for byte as it was at its old call sites: a failed Prepare quotes it in its message.
#include "store/catalog_maintenance.h"

namespace stashfs::catalog {

namespace {

// Steps `q` to completion, handing each row to `fn`.
template <typename F>
Status EachRow(Query& q, F fn) {
  for (;;) {
    ASSIGN_OR_RETURN(bool row, q.step());
    if (!row) return Status::Ok();
    fn(q);
  }
}

BlockLocation LocationFromRow(const Query& q, int64_t pack_id, int first) {
  return {pack_id,
          static_cast<uint64_t>(q.i64(first)),
          static_cast<uint32_t>(q.i64(first + 1)),
          static_cast<uint32_t>(q.i64(first + 2)),
          static_cast<uint32_t>(q.i64(first + 3)),
          static_cast<Codec>(q.i64(first + 4))};
}

}  // namespace

Result<std::vector<PackLive>> PackLiveBytes(Db* r) {
  ASSIGN_OR_RETURN(
      auto q,
      r->Prepare("WITH live AS (SELECT DISTINCT block_id FROM objects o WHERE block_id != 0 AND "
                 "(refs > 0 OR "
                 "EXISTS (SELECT 1 FROM pins p WHERE p.object_id = o.id))) "
                 "SELECT p.id, p.state, coalesce(sum(b.header_len + b.stored_len), 0) FROM packs p "
                 "LEFT JOIN blocks b ON b.pack_id = p.id AND b.id IN (SELECT block_id FROM live) "
                 "GROUP BY p.id ORDER BY p.id"));
  std::vector<PackLive> out;
  RETURN_IF_ERROR(EachRow(q, [&](const Query& row) {
    out.push_back({row.i64(0), static_cast<int>(row.i64(1)), static_cast<uint64_t>(row.i64(2))});
  }));
  return out;
}

Result<std::vector<int64_t>> ListPackIds(Db* r) {
  ASSIGN_OR_RETURN(auto q, r->Prepare("SELECT id FROM packs"));
  std::vector<int64_t> out;
  RETURN_IF_ERROR(EachRow(q, [&](const Query& row) { out.push_back(row.i64(0)); }));
  return out;
}

Status DeleteBlock(Db* w, int64_t block_id) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("DELETE FROM blocks WHERE id=?"));
  return q.bind(1, block_id).run();
}

Status DeleteBlocksOfPack(Db* w, int64_t pack_id) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("DELETE FROM blocks WHERE pack_id=?"));
  return q.bind(1, pack_id).run();
}

Result<std::vector<BlockRow>> BlocksOfPack(Db* r, int64_t pack_id) {
  ASSIGN_OR_RETURN(
      auto q,
      r->Prepare(
          "SELECT id, offset, header_len, stored_len, raw_len, codec FROM blocks WHERE pack_id=? "
          "ORDER BY offset"));
  q.bind(1, pack_id);
  std::vector<BlockRow> out;
  RETURN_IF_ERROR(EachRow(q, [&](const Query& row) {
    out.push_back({row.i64(0), LocationFromRow(row, pack_id, 1)});
  }));
  return out;
}

Result<std::vector<BlockObject>> ObjectsOfBlock(Db* r, int64_t block_id) {
  ASSIGN_OR_RETURN(
      auto q,
      r->Prepare(
          "SELECT id, hash, kind, offset, size FROM objects WHERE block_id=? ORDER BY offset"));
  q.bind(1, block_id);
  std::vector<BlockObject> out;
  RETURN_IF_ERROR(EachRow(q, [&](const Query& row) {
    out.push_back({row.i64(0), row.hash(1), static_cast<ObjectKind>(row.i64(2)),
                   static_cast<uint32_t>(row.i64(3)), static_cast<uint32_t>(row.i64(4))});
  }));
  return out;
}

Status MoveObject(Db* w, int64_t object_id, int64_t block_id, uint32_t offset) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("UPDATE objects SET block_id=?, offset=? WHERE id=?"));
  return q.bind(1, block_id).bind(2, offset).bind(3, object_id).run();
}

Result<Garbage> CountGarbage(Db* r) {
  ASSIGN_OR_RETURN(
      auto q,
      r->Prepare(
          "SELECT count(*), coalesce(sum(size), 0) FROM objects o WHERE refs = 0 AND NOT EXISTS "
          "(SELECT 1 FROM pins p WHERE p.object_id = o.id)"));
  ASSIGN_OR_RETURN(bool row, q.step());
  Garbage g;
  if (row) {
    g.objects = static_cast<uint64_t>(q.i64(0));
    g.bytes = static_cast<uint64_t>(q.i64(1));
  }
  return g;
}

Result<Garbage> DeleteGarbageBatch(Db* w) {
  ASSIGN_OR_RETURN(
      auto q,
      w->Prepare(
          "DELETE FROM objects WHERE id IN (SELECT id FROM objects o WHERE refs = 0 AND NOT "
          "EXISTS (SELECT 1 FROM pins p WHERE p.object_id = o.id) LIMIT 5000) RETURNING size"));
  Garbage g;
  RETURN_IF_ERROR(EachRow(q, [&](const Query& row) {
    ++g.objects;
    g.bytes += static_cast<uint64_t>(row.i64(0));
  }));
  return g;
}

Status DeleteEmptyBlocks(Db* w) {
  return w->Exec(
      "DELETE FROM blocks WHERE NOT EXISTS (SELECT 1 FROM objects o WHERE "
      "o.block_id = blocks.id)");
}

Status IntegrityCheck(Db* r, const std::function<void(const std::string&)>& problem) {
  ASSIGN_OR_RETURN(auto q, r->Prepare("PRAGMA integrity_check"));
  return EachRow(q, [&](const Query& row) {
    if (row.text(0) != "ok") problem(row.text(0));
  });
}

Status ForEachPack(Db* r, const std::function<void(int64_t id, uint64_t size)>& fn) {
  ASSIGN_OR_RETURN(auto q, r->Prepare("SELECT id, size FROM packs"));
  return EachRow(q, [&](const Query& row) { fn(row.i64(0), static_cast<uint64_t>(row.i64(1))); });
}

Status ForEachBlock(Db* r, const std::function<void(int64_t id, const BlockLocation&)>& fn) {
  ASSIGN_OR_RETURN(
      auto q,
      r->Prepare("SELECT id, pack_id, offset, header_len, stored_len, raw_len, codec FROM blocks"));
  return EachRow(q, [&](const Query& row) { fn(row.i64(0), LocationFromRow(row, row.i64(1), 2)); });
}

Status ForEachObject(Db* r, const std::function<void(const ObjectRow&)>& fn) {
  ASSIGN_OR_RETURN(
      auto q,
      r->Prepare("SELECT id, hash, kind, block_id, offset, size, refs, verified FROM objects"));
  return EachRow(q, [&](const Query& row) {
    fn({row.i64(0), ObjectKey{row.hash(1), static_cast<ObjectKind>(row.i64(2))}, row.i64(3),
        static_cast<uint32_t>(row.i64(4)), static_cast<uint32_t>(row.i64(5)), row.i64(6),
        row.i64(7)});
  });
}

Status ForEachSnapshotRoot(Db* r,
                           const std::function<void(const std::string& key, const Hash&)>& fn) {
  ASSIGN_OR_RETURN(auto q, r->Prepare("SELECT key, root FROM snapshots"));
  return EachRow(q, [&](const Query& row) { fn(row.text(0), row.hash(1)); });
}

Status ForEachVolumeRoot(Db* r,
                         const std::function<void(const std::string& name, const Hash&)>& fn) {
  ASSIGN_OR_RETURN(auto q, r->Prepare("SELECT name, root FROM volumes"));
  return EachRow(q, [&](const Query& row) { fn(row.text(0), row.hash(1)); });
}

Status SetBlockVerified(Db* w, int64_t block_id, int64_t now) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("UPDATE objects SET verified=? WHERE block_id=?"));
  return q.bind(1, now).bind(2, block_id).run();
}

Status MarkObjectLost(Db* w, int64_t object_id) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("UPDATE objects SET block_id=0 WHERE id=?"));
  return q.bind(1, object_id).run();
}

Status FixObjectRefs(Db* w, int64_t object_id, int64_t delta) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("UPDATE objects SET refs = refs + ? WHERE id=?"));
  return q.bind(1, delta).bind(2, object_id).run();
}

Status ClearDamagedMarks(Db* w) {
  RETURN_IF_ERROR(w->Exec("UPDATE snapshots SET damaged=0"));
  return w->Exec("UPDATE volumes SET damaged=0");
}

Status MarkSnapshotDamaged(Db* w, const std::string& key) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("UPDATE snapshots SET damaged=1 WHERE key=?"));
  return q.bind(1, key).run();
}

Status MarkVolumeDamaged(Db* w, const std::string& name) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("UPDATE volumes SET damaged=1 WHERE name=?"));
  return q.bind(1, name).run();
}

}  // namespace stashfs::catalog
