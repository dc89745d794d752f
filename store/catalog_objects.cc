// The objects, blocks, packs and pins statements (see catalog_objects.h). The SQL text is kept
// byte for byte as it was at its old call sites: a failed Prepare quotes it in its message.
#include "store/catalog_objects.h"

namespace stashfs::catalog {

// ---- packs ---------------------------------------------------------------------------------

Result<int64_t> InsertOpenPack(Db* w, int64_t writer, int64_t now) {
  ASSIGN_OR_RETURN(
      auto q, w->Prepare("INSERT INTO packs(state, size, writer, created) VALUES(0, ?, ?, ?)"));
  RETURN_IF_ERROR(
      q.bind(1, static_cast<int64_t>(kPackHeaderSize)).bind(2, writer).bind(3, now).run());
  return w->last_insert_rowid();
}

Status SetPackSize(Db* w, int64_t pack_id, uint64_t size) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("UPDATE packs SET size=? WHERE id=?"));
  return q.bind(1, size).bind(2, pack_id).run();
}

Status SealPack(Db* w, int64_t pack_id, uint64_t size) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("UPDATE packs SET state=1, writer=NULL, size=? WHERE id=?"));
  return q.bind(1, size).bind(2, pack_id).run();
}

Status SealPacksOfWriter(Db* w, int64_t writer) {
  ASSIGN_OR_RETURN(auto q,
                   w->Prepare("UPDATE packs SET state=1, writer=NULL WHERE writer=? AND state=0"));
  return q.bind(1, writer).run();
}

Status DeletePack(Db* w, int64_t pack_id) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("DELETE FROM packs WHERE id=?"));
  return q.bind(1, pack_id).run();
}

// ---- blocks --------------------------------------------------------------------------------

Result<int64_t> InsertBlock(Db* w, const BlockLocation& loc) {
  ASSIGN_OR_RETURN(
      auto q,
      w->Prepare("INSERT INTO blocks(pack_id, offset, header_len, stored_len, raw_len, codec) "
                 "VALUES(?, ?, ?, ?, ?, ?)"));
  RETURN_IF_ERROR(q.bind(1, loc.pack_id)
                      .bind(2, loc.offset)
                      .bind(3, loc.header_len)
                      .bind(4, loc.stored_len)
                      .bind(5, loc.raw_len)
                      .bind(6, static_cast<int>(loc.codec))
                      .run());
  return w->last_insert_rowid();
}

// ---- objects -------------------------------------------------------------------------------

Status InsertObject(Db* w, const BlockEntry& e, int64_t block_id, int64_t now) {
  ASSIGN_OR_RETURN(
      auto q,
      w->Prepare("INSERT INTO objects(hash, kind, block_id, offset, size, created) "
                 "VALUES(?, ?, ?, ?, ?, ?) "
                 // A lost object (fsck found its data damaged) is healed by the first writer that
                 // stores the same bytes again: every snapshot referring to it then reads the copy.
                 "ON CONFLICT(hash, kind) DO UPDATE SET block_id=excluded.block_id, "
                 "offset=excluded.offset WHERE objects.block_id = 0"));
  return q.bind(1, e.hash)
      .bind(2, static_cast<int>(e.kind))
      .bind(3, block_id)
      .bind(4, e.offset)
      .bind(5, e.size)
      .bind(6, now)
      .run();
}

Result<std::optional<ObjectLocation>> FindObjectLocation(Db* r, const ObjectKey& key) {
  // A LEFT JOIN: a lost object (block_id 0) or one whose block row is missing still has a row,
  // so the caller can tell "lost" from "not in the store".
  ASSIGN_OR_RETURN(
      auto q,
      r->Prepare(
          "SELECT o.offset, o.size, b.pack_id, b.offset, b.header_len, b.stored_len, b.raw_len, "
          "b.codec, o.block_id FROM objects o LEFT JOIN blocks b ON b.id = o.block_id "
          "WHERE o.hash=? AND o.kind=?"));
  q.bind(1, key.hash).bind(2, static_cast<int>(key.kind));
  ASSIGN_OR_RETURN(bool row, q.step());
  if (!row) return std::optional<ObjectLocation>();
  ObjectLocation out;
  out.block_id = q.i64(8);
  out.has_block = !q.is_null(2);
  out.offset = static_cast<uint32_t>(q.i64(0));
  out.size = static_cast<uint32_t>(q.i64(1));
  out.loc = {q.i64(2),
             static_cast<uint64_t>(q.i64(3)),
             static_cast<uint32_t>(q.i64(4)),
             static_cast<uint32_t>(q.i64(5)),
             static_cast<uint32_t>(q.i64(6)),
             static_cast<Codec>(q.i64(7))};
  return std::optional<ObjectLocation>(out);
}

Result<bool> HasStoredObject(Db* r, const ObjectKey& key) {
  ASSIGN_OR_RETURN(auto q,
                   r->Prepare("SELECT 1 FROM objects WHERE hash=? AND kind=? AND block_id != 0"));
  q.bind(1, key.hash).bind(2, static_cast<int>(key.kind));
  return q.step();
}

Result<std::optional<ObjectUsage>> FindObjectUsage(Db* r, const ObjectKey& key) {
  ASSIGN_OR_RETURN(auto q, r->Prepare("SELECT o.refs, o.size, coalesce(b.stored_len, 0), "
                                      "coalesce(b.raw_len, 0), EXISTS (SELECT 1 FROM pins p "
                                      "WHERE p.object_id = o.id) FROM objects o LEFT JOIN "
                                      "blocks b ON b.id = o.block_id WHERE o.hash=? AND o.kind=?"));
  q.bind(1, key.hash).bind(2, static_cast<int>(key.kind));
  ASSIGN_OR_RETURN(bool row, q.step());
  if (!row) return std::optional<ObjectUsage>();
  ObjectUsage u{q.i64(0), q.i64(1), q.i64(2), q.i64(3), q.i64(4) != 0};
  RETURN_IF_ERROR(q.run());
  return std::optional<ObjectUsage>(u);
}

Result<std::optional<int64_t>> AddObjectRefs(Db* w, const ObjectKey& key, int64_t delta) {
  ASSIGN_OR_RETURN(
      auto q,
      w->Prepare("UPDATE objects SET refs = refs + ? WHERE hash=? AND kind=? RETURNING refs"));
  q.bind(1, delta).bind(2, key.hash).bind(3, static_cast<int>(key.kind));
  ASSIGN_OR_RETURN(bool row, q.step());
  if (!row) return std::optional<int64_t>();
  int64_t refs = q.i64(0);
  RETURN_IF_ERROR(q.run());
  return std::optional<int64_t>(refs);
}

// ---- pins ----------------------------------------------------------------------------------

Result<bool> PinIfStored(Db* w, int64_t mount_id, uint64_t gen, const ObjectKey& key) {
  ASSIGN_OR_RETURN(
      auto q,
      w->Prepare("INSERT INTO pins(mount_id, object_id, gen) SELECT ?, id, ? FROM objects "
                 "WHERE hash=? AND kind=? AND block_id != 0 ON CONFLICT(mount_id, object_id) "
                 "DO UPDATE SET gen=max(gen, excluded.gen)"));
  RETURN_IF_ERROR(
      q.bind(1, mount_id).bind(2, gen).bind(3, key.hash).bind(4, static_cast<int>(key.kind)).run());
  return w->changes() > 0;
}

Status PinObject(Db* w, int64_t mount_id, uint64_t gen, const ObjectKey& key) {
  ASSIGN_OR_RETURN(
      auto q, w->Prepare("INSERT INTO pins(mount_id, object_id, gen) SELECT ?, id, ? FROM objects "
                         "WHERE hash=? AND kind=? ON CONFLICT(mount_id, object_id) DO UPDATE SET "
                         "gen=max(gen, excluded.gen)"));
  return q.bind(1, mount_id)
      .bind(2, gen)
      .bind(3, key.hash)
      .bind(4, static_cast<int>(key.kind))
      .run();
}

Status UnpinObject(Db* w, int64_t mount_id, uint64_t gen, const ObjectKey& key) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("DELETE FROM pins WHERE mount_id=? AND gen=? AND object_id="
                                      "(SELECT id FROM objects WHERE hash=? AND kind=?)"));
  return q.bind(1, mount_id)
      .bind(2, gen)
      .bind(3, key.hash)
      .bind(4, static_cast<int>(key.kind))
      .run();
}

Status ReleasePins(Db* w, int64_t mount_id, uint64_t upto) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("DELETE FROM pins WHERE mount_id=? AND gen<=?"));
  return q.bind(1, mount_id).bind(2, upto).run();
}

Status DropPinsOfMount(Db* w, int64_t mount_id) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("DELETE FROM pins WHERE mount_id=?"));
  return q.bind(1, mount_id).run();
}

}  // namespace stashfs::catalog
