// The volumes, snapshots, mounts and counters statements (see catalog_roots.h). The SQL text is
// kept byte for byte as it was at its old call sites: a failed Prepare quotes it in its message.
#include "store/catalog_roots.h"

namespace stashfs::catalog {

namespace {

// Both read "id, name, root, ephemeral, coalesce(source, ''), created, updated, last_used".
VolumeInfo VolumeFromRow(const Query& q) {
  VolumeInfo v;
  v.id = q.i64(0);
  v.name = q.text(1);
  v.root = q.hash(2);
  v.ephemeral = q.i64(3) != 0;
  v.source = q.text(4);
  v.created = q.i64(5);
  v.updated = q.i64(6);
  v.last_used = q.i64(7);
  return v;
}

// "id, key, root, created, last_used, logical_bytes, files, damaged".
SnapshotInfo SnapshotFromRow(const Query& q) {
  SnapshotInfo s;
  s.id = q.i64(0);
  s.key = q.text(1);
  s.root = q.hash(2);
  s.created = q.i64(3);
  s.last_used = q.i64(4);
  s.logical_bytes = static_cast<uint64_t>(q.i64(5));
  s.files = static_cast<uint64_t>(q.i64(6));
  s.damaged = q.i64(7) != 0;
  return s;
}

template <typename T, typename F>
Result<std::optional<T>> OneRow(Query& q, F from_row) {
  ASSIGN_OR_RETURN(bool row, q.step());
  if (!row) return std::optional<T>();
  return std::optional<T>(from_row(q));
}

template <typename T, typename F>
Result<std::vector<T>> AllRows(Query& q, F from_row) {
  std::vector<T> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, q.step());
    if (!row) break;
    out.push_back(from_row(q));
  }
  return out;
}

// DELETE ... RETURNING root: the root of the deleted row, stepped to completion.
Result<std::optional<Hash>> DeletedRoot(Query& q) {
  ASSIGN_OR_RETURN(bool row, q.step());
  if (!row) return std::optional<Hash>();
  Hash root = q.hash(0);
  RETURN_IF_ERROR(q.run());
  return std::optional<Hash>(root);
}

}  // namespace

// ---- mounts --------------------------------------------------------------------------------

Result<int64_t> InsertMount(Db* w, int64_t pid, const std::string& host,
                            const std::string& mountpoint, int64_t started,
                            const std::string& lock) {
  ASSIGN_OR_RETURN(
      auto q,
      w->Prepare("INSERT INTO mounts(pid, host, mountpoint, started, lock) VALUES(?, ?, ?, ?, ?)"));
  RETURN_IF_ERROR(
      q.bind(1, pid).bind(2, host).bind(3, mountpoint).bind(4, started).bind(5, lock).run());
  return w->last_insert_rowid();
}

Status DeleteMount(Db* w, int64_t mount_id) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("DELETE FROM mounts WHERE id=?"));
  return q.bind(1, mount_id).run();
}

Status SetMountVolume(Db* w, int64_t mount_id, int64_t volume_id) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("UPDATE mounts SET volume_id=? WHERE id=?"));
  return q.bind(1, volume_id).bind(2, mount_id).run();
}

Result<std::vector<MountLock>> ListMountLocks(Db* r) {
  ASSIGN_OR_RETURN(auto q, r->Prepare("SELECT id, lock FROM mounts"));
  return AllRows<MountLock>(q, [](const Query& row) { return MountLock{row.i64(0), row.text(1)}; });
}

Result<std::vector<MountInfo>> ListMounts(Db* r) {
  ASSIGN_OR_RETURN(auto q, r->Prepare("SELECT id, pid, host, mountpoint, coalesce(volume_id, 0), "
                                      "started FROM mounts ORDER BY id"));
  return AllRows<MountInfo>(q, [](const Query& row) {
    return MountInfo{row.i64(0), row.i64(1), row.text(2), row.text(3), row.i64(4), row.i64(5)};
  });
}

// ---- volumes -------------------------------------------------------------------------------

Result<std::optional<VolumeInfo>> FindVolumeByName(Db* r, const std::string& name) {
  ASSIGN_OR_RETURN(
      auto q,
      r->Prepare(
          "SELECT id, name, root, ephemeral, coalesce(source, ''), created, updated, last_used "
          "FROM volumes WHERE name=?"));
  q.bind(1, name);
  return OneRow<VolumeInfo>(q, VolumeFromRow);
}

Result<std::optional<VolumeInfo>> FindVolumeById(Db* r, int64_t id) {
  ASSIGN_OR_RETURN(
      auto q,
      r->Prepare(
          "SELECT id, name, root, ephemeral, coalesce(source, ''), created, updated, last_used "
          "FROM volumes WHERE id=?"));
  q.bind(1, id);
  return OneRow<VolumeInfo>(q, VolumeFromRow);
}

Result<std::vector<VolumeInfo>> ListVolumes(Db* r) {
  ASSIGN_OR_RETURN(
      auto q,
      r->Prepare(
          "SELECT id, name, root, ephemeral, coalesce(source, ''), created, updated, last_used "
          "FROM volumes ORDER BY name"));
  return AllRows<VolumeInfo>(q, VolumeFromRow);
}

Result<bool> InsertVolume(Db* w, const std::string& name, const Hash& root, bool ephemeral,
                          const std::string& source, int64_t now) {
  ASSIGN_OR_RETURN(
      auto q,
      w->Prepare("INSERT INTO volumes(name, root, ephemeral, source, created, updated, last_used) "
                 "VALUES(?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO NOTHING"));
  q.bind(1, name).bind(2, root).bind(3, ephemeral ? 1 : 0).bind(5, now).bind(6, now).bind(7, now);
  if (source.empty())
    q.bind_null(4);
  else
    q.bind(4, source);
  RETURN_IF_ERROR(q.run());
  return w->changes() != 0;
}

Status TouchVolume(Db* w, int64_t volume_id, int64_t now) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("UPDATE volumes SET last_used=? WHERE id=?"));
  return q.bind(1, now).bind(2, volume_id).run();
}

Result<bool> MoveVolumeRoot(Db* w, int64_t volume_id, const Hash& old_root, const Hash& new_root,
                            int64_t now) {
  ASSIGN_OR_RETURN(
      auto q,
      w->Prepare("UPDATE volumes SET root=?, updated=?, last_used=? WHERE id=? AND root=?"));
  RETURN_IF_ERROR(
      q.bind(1, new_root).bind(2, now).bind(3, now).bind(4, volume_id).bind(5, old_root).run());
  return w->changes() == 1;
}

Result<std::optional<Hash>> DeleteVolume(Db* w, int64_t volume_id) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("DELETE FROM volumes WHERE id=? RETURNING root"));
  q.bind(1, volume_id);
  return DeletedRoot(q);
}

Result<std::optional<Hash>> DeleteEphemeralVolume(Db* w, const std::string& name) {
  ASSIGN_OR_RETURN(auto q,
                   w->Prepare("DELETE FROM volumes WHERE name=? AND ephemeral=1 RETURNING root"));
  q.bind(1, name);
  return DeletedRoot(q);
}

// ---- snapshots -----------------------------------------------------------------------------

Result<std::optional<SnapshotInfo>> FindSnapshotByKey(Db* r, const std::string& key) {
  ASSIGN_OR_RETURN(
      auto q,
      r->Prepare(
          "SELECT id, key, root, created, last_used, logical_bytes, files, damaged FROM snapshots "
          "WHERE key=?"));
  q.bind(1, key);
  return OneRow<SnapshotInfo>(q, SnapshotFromRow);
}

Result<std::vector<SnapshotInfo>> ListSnapshots(Db* r) {
  ASSIGN_OR_RETURN(
      auto q,
      r->Prepare(
          "SELECT id, key, root, created, last_used, logical_bytes, files, damaged FROM snapshots "
          "ORDER BY key"));
  return AllRows<SnapshotInfo>(q, SnapshotFromRow);
}

Result<std::optional<SnapshotInfo>> NewestSnapshotWithPrefix(Db* r, const std::string& prefix) {
  ASSIGN_OR_RETURN(
      auto q,
      r->Prepare(
          "SELECT id, key, root, created, last_used, logical_bytes, files, damaged FROM snapshots "
          "WHERE substr(key, 1, length(?1)) = ?1 ORDER BY created DESC, id DESC LIMIT 1"));
  q.bind(1, prefix);
  return OneRow<SnapshotInfo>(q, SnapshotFromRow);
}

Result<std::optional<SnapshotRoot>> FindSnapshotRoot(Db* r, const std::string& key) {
  ASSIGN_OR_RETURN(auto q, r->Prepare("SELECT id, root FROM snapshots WHERE key=?"));
  q.bind(1, key);
  ASSIGN_OR_RETURN(bool exists, q.step());
  if (!exists) return std::optional<SnapshotRoot>();
  SnapshotRoot s{q.i64(0), q.hash(1)};
  RETURN_IF_ERROR(q.run());
  return std::optional<SnapshotRoot>(s);
}

Status InsertSnapshot(Db* w, const std::string& key, const Hash& root, int64_t now,
                      uint64_t logical_bytes, uint64_t files) {
  ASSIGN_OR_RETURN(
      auto q,
      w->Prepare("INSERT INTO snapshots(key, root, created, last_used, logical_bytes, files) "
                 "VALUES(?, ?, ?, ?, ?, ?)"));
  return q.bind(1, key)
      .bind(2, root)
      .bind(3, now)
      .bind(4, now)
      .bind(5, logical_bytes)
      .bind(6, files)
      .run();
}

Status ReplaceSnapshot(Db* w, int64_t id, const Hash& root, int64_t now, uint64_t logical_bytes,
                       uint64_t files) {
  ASSIGN_OR_RETURN(
      auto q,
      w->Prepare("UPDATE snapshots SET root=?, created=?, last_used=?, logical_bytes=?, files=?, "
                 "damaged=0 WHERE id=?"));
  return q.bind(1, root)
      .bind(2, now)
      .bind(3, now)
      .bind(4, logical_bytes)
      .bind(5, files)
      .bind(6, id)
      .run();
}

Status TouchSnapshot(Db* w, int64_t id, int64_t now) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("UPDATE snapshots SET last_used=? WHERE id=?"));
  return q.bind(1, now).bind(2, id).run();
}

Result<std::optional<Hash>> DeleteSnapshot(Db* w, int64_t id) {
  ASSIGN_OR_RETURN(auto q, w->Prepare("DELETE FROM snapshots WHERE id=? RETURNING root"));
  q.bind(1, id);
  return DeletedRoot(q);
}

// ---- counters and totals -------------------------------------------------------------------

Status AddCounter(Db* w, const std::string& name, int64_t delta) {
  ASSIGN_OR_RETURN(auto q,
                   w->Prepare("INSERT INTO counters(name, value) VALUES(?, ?) "
                              "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"));
  return q.bind(1, name).bind(2, delta).run();
}

Result<std::vector<std::pair<std::string, int64_t>>> ListCounters(Db* r) {
  ASSIGN_OR_RETURN(auto q, r->Prepare("SELECT name, value FROM counters ORDER BY name"));
  return AllRows<std::pair<std::string, int64_t>>(
      q, [](const Query& row) { return std::make_pair(row.text(0), row.i64(1)); });
}

Result<Totals> CountRows(Db* r) {
  Totals t;
  auto scalar = [&](const char* sql, uint64_t* out) -> Status {
    ASSIGN_OR_RETURN(auto q, r->Prepare(sql));
    ASSIGN_OR_RETURN(bool row, q.step());
    *out = row ? static_cast<uint64_t>(q.i64(0)) : 0;
    return Status::Ok();
  };
  RETURN_IF_ERROR(scalar("SELECT count(*) FROM objects", &t.objects));
  RETURN_IF_ERROR(scalar("SELECT coalesce(sum(size), 0) FROM objects", &t.object_bytes));
  RETURN_IF_ERROR(scalar("SELECT count(*) FROM objects WHERE kind=1", &t.chunks));
  RETURN_IF_ERROR(
      scalar("SELECT coalesce(sum(size), 0) FROM objects WHERE kind=1", &t.chunk_bytes));
  RETURN_IF_ERROR(scalar("SELECT count(*) FROM objects WHERE refs=0", &t.unreferenced_objects));
  RETURN_IF_ERROR(scalar("SELECT count(*) FROM blocks", &t.blocks));
  RETURN_IF_ERROR(scalar("SELECT count(*) FROM packs", &t.packs));
  RETURN_IF_ERROR(scalar("SELECT coalesce(sum(size), 0) FROM packs", &t.pack_bytes));
  return t;
}

}  // namespace stashfs::catalog
