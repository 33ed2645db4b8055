//! The local filesystem store, with its ranged reads made in one step.
//!
//! `LocalFileSystem` (object_store 0.14) serves a ranged GET in two trips to the blocking pool
//! (open and stat in `get_opts`, the read in `GetResult::bytes`) and zero-fills the buffer before
//! reading into it. The segment cache reads 1 MiB blocks this way whenever a consumer reads
//! behind what the cache holds, and the zero-fill alone was 5 % of the agent's samples in such a
//! catch-up consume. Here a ranged GET with no other option is opened and read on the calling
//! thread as far as the page cache holds the range (`preadv2` with `RWF_NOWAIT`), the rest in
//! one blocking call, into uninitialized memory; a large range the page cache holds whole is
//! mapped instead of copied (objects are immutable, see [`map_cached`]): the copy out of the
//! page cache was a quarter of a consume's samples, and the socket send now copies straight
//! from it, the one copy Kafka's `sendfile` makes. Every other request is `LocalFileSystem`'s
//! own.

use std::fmt;
use std::fs::{File, Metadata};
use std::io;
use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, Error, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, Result,
};

/// The name `LocalFileSystem` gives itself in errors; ours are its errors.
const STORE: &str = "LocalFileSystem";

/// `LocalFileSystem` with ranged GETs read in one blocking call (see the module docs).
#[derive(Debug)]
pub(crate) struct LocalStore {
    inner: LocalFileSystem,
}

impl LocalStore {
    /// Serves `inner`'s objects, reading ranges itself.
    pub(crate) fn new(inner: LocalFileSystem) -> Self {
        Self { inner }
    }

    /// A ranged GET with no condition, head or version. The file is opened and read on the
    /// calling thread as far as the page cache holds it (recently written objects: what
    /// consumers read); only the rest is read in a blocking call. Opening can still wait for
    /// the disk when the file's inode is not cached, as Kafka's `sendfile` on its network
    /// threads can; the read itself never does.
    async fn get_range_at_once(&self, location: &Path, range: GetRange) -> Result<GetResult> {
        let file_path = self.inner.path_to_filesystem(location)?;
        let (file, meta, range) = open(&file_path, location.clone(), range)?;
        let bytes = match map_cached(&file, &range) {
            Some(mapped) => mapped,
            None => read(file, file_path, &range).await?,
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(bytes) }).boxed()),
            meta,
            range,
            attributes: Attributes::default(),
            extensions: Default::default(),
        })
    }
}

/// Reads `range` of `file`: on the calling thread as far as the page cache holds it, the rest in
/// one blocking call.
async fn read(file: File, file_path: std::path::PathBuf, range: &Range<u64>) -> Result<Bytes> {
    let len = (range.end - range.start) as usize;
    let mut buf = Vec::with_capacity(len);
    fill(&file, &mut buf, len, range.start, Wait::No).map_err(|e| generic(&file_path, e))?;
    if buf.len() < len {
        let start = range.start;
        buf = tokio::task::spawn_blocking(move || {
            fill(&file, &mut buf, len, start, Wait::Yes).map_err(|e| generic(&file_path, e))?;
            Ok::<_, Error>(buf)
        })
        .await
        .map_err(|source| Error::JoinError { source })??;
    }
    Ok(Bytes::from(buf))
}

/// Ranges at least this long are mapped rather than copied when the page cache holds them.
/// Mapping 1 MiB of cached pages and unmapping it costs about a quarter of copying it out with
/// `pread` (37 against 131 µs on the build machine's ext4); under 64 KiB the two cost the same,
/// and each mapping is one of the process's `vm.max_map_count` (65,530 by default), so only
/// ranges as large as a cache block's share are mapped.
const MAP_MIN_BYTES: u64 = 128 * 1024;

/// `range` of `file` as a mapping of its page-cache pages, when it is long enough to be worth
/// it and every page is cached (so reading it never waits for the disk on this thread); `None`
/// to read it instead (also when mapping fails, e.g. at the map-count limit).
///
/// Sound only because objects are immutable: `LocalFileSystem` writes a staging file and renames
/// it into place, and nothing truncates a committed object, which is what would turn a read of
/// the mapping into `SIGBUS`. Deleting a mapped object is safe (its pages live until unmapped).
#[cfg(target_os = "linux")]
fn map_cached(file: &File, range: &Range<u64>) -> Option<Bytes> {
    use memmap2::{Advice, MmapOptions};
    let len = range.end - range.start;
    if len < MAP_MIN_BYTES {
        return None;
    }
    // SAFETY: a committed object's file is never modified or truncated (above), so the mapped
    // bytes stay what they are for the mapping's life.
    let map = unsafe {
        MmapOptions::new()
            .offset(range.start)
            .len(usize::try_from(len).ok()?)
            .map(file)
    }
    .ok()?;
    if !all_cached(&map) {
        return None;
    }
    // One call to fill the page tables instead of a fault per 64 KiB when the bytes are read;
    // kernels before 5.14 do not know the advice, and faults serve them as well.
    let _ = map.advise(Advice::PopulateRead);
    Some(Bytes::from_owner(map))
}

#[cfg(not(target_os = "linux"))]
fn map_cached(_file: &File, _range: &Range<u64>) -> Option<Bytes> {
    None
}

/// Whether every page under `map` is in the page cache (`mincore`, which does not fault them
/// in). By hand: memmap2 does not wrap `mincore`.
#[cfg(target_os = "linux")]
fn all_cached(map: &memmap2::Mmap) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let start = map.as_ptr() as usize & !(page - 1);
    let len = map.as_ptr() as usize + map.len() - start;
    let mut pages = vec![0u8; len.div_ceil(page)];
    // SAFETY: `start..start + len` is the page-aligned span of `map`'s own mapping (memmap2
    // maps from the page holding the offset), and `pages` has one byte per page of it.
    let done = unsafe { libc::mincore(start as *mut libc::c_void, len, pages.as_mut_ptr()) };
    done == 0 && pages.iter().all(|&p| p & 1 == 1)
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Whether `options` asks for a range and nothing else.
fn only_a_range(options: &GetOptions) -> Option<GetRange> {
    let plain = !options.head
        && options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
        && options.version.is_none();
    options.range.clone().filter(|_| plain)
}

/// Opens `file_path` and resolves `range` against its size.
fn open(
    file_path: &std::path::Path,
    location: Path,
    range: GetRange,
) -> Result<(File, ObjectMeta, Range<u64>)> {
    let open_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            path: file_path.display().to_string(),
            source: source.into(),
        },
        _ => generic(file_path, source),
    };
    let file = File::open(file_path).map_err(open_error)?;
    let metadata = file.metadata().map_err(open_error)?;
    if metadata.is_dir() {
        return Err(open_error(io::Error::new(
            io::ErrorKind::NotFound,
            "is directory",
        )));
    }
    let meta = object_meta(&metadata, location);
    let range = range.as_range(meta.size).map_err(|source| Error::Generic {
        store: STORE,
        source: source.into(),
    })?;
    Ok((file, meta, range))
}

fn generic(file_path: &std::path::Path, source: io::Error) -> Error {
    Error::Generic {
        store: STORE,
        source: format!("reading {}: {source}", file_path.display()).into(),
    }
}

/// Whether a read may wait for the disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Yes,
    /// Only what the page cache holds is read.
    No,
}

/// Reads the bytes of `file` from `start + buf.len()` on into `buf` until it holds `len`;
/// with [`Wait::No`], stops early (not an error) at the first byte not in the page cache.
/// Objects are immutable, so a file ending before `start + len` (a size read from its
/// metadata) is an error, not a short answer.
fn fill(file: &File, buf: &mut Vec<u8>, len: usize, start: u64, wait: Wait) -> io::Result<()> {
    while buf.len() < len {
        let offset = start + buf.len() as u64;
        match read_spare(file, buf, len, offset, wait) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("object ended at {offset}, before {}", start + len as u64),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EAGAIN: not cached; EOPNOTSUPP: a filesystem or kernel without RWF_NOWAIT.
            Err(e)
                if wait == Wait::No
                    && matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EOPNOTSUPP)) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One read at `offset` into the capacity of `buf` past its length, up to `len` bytes in all;
/// the bytes read are appended. By hand because no maintained crate reads into uninitialized
/// memory with `preadv2`'s flags (rustix's `preadv2` takes initialized slices), and
/// zero-filling the buffer first was the cost this module removes.
fn read_spare(
    file: &File,
    buf: &mut Vec<u8>,
    len: usize,
    offset: u64,
    wait: Wait,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let want = len - buf.len();
    let spare = &mut buf.spare_capacity_mut()[..want];
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    // SAFETY: the kernel writes at most `iov_len` bytes at `iov_base`, memory `buf` owns and
    // nothing else uses during the call.
    let read = unsafe {
        #[cfg(target_os = "linux")]
        let flags = match wait {
            Wait::Yes => 0,
            Wait::No => libc::RWF_NOWAIT,
        };
        #[cfg(target_os = "linux")]
        let read = libc::preadv2(file.as_raw_fd(), &iov, 1, offset, flags);
        #[cfg(not(target_os = "linux"))]
        let read = match wait {
            Wait::Yes => libc::pread(file.as_raw_fd(), iov.iov_base, iov.iov_len, offset),
            Wait::No => return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
        };
        read
    };
    let read = usize::try_from(read).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: the kernel initialized the first `read` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + read) };
    Ok(read)
}

/// The object's metadata as `LocalFileSystem` reports it, e-tag included (its `"inode-mtime
/// in microseconds-size"` in hex), so conditional requests made with it match its own.
fn object_meta(metadata: &Metadata, location: Path) -> ObjectMeta {
    let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let micros = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let inode = std::os::unix::fs::MetadataExt::ino(metadata);
    let size = metadata.len();
    ObjectMeta {
        location,
        last_modified: modified.into(),
        size,
        e_tag: Some(format!("\"{inode:x}-{micros:x}-{size:x}\"")),
        version: None,
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        match only_a_range(&options) {
            Some(range) => self.get_range_at_once(location, range).await,
            None => self.inner.get_opts(location, options).await,
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    fn stores() -> (tempfile::TempDir, LocalStore, LocalFileSystem) {
        let dir = tempfile::tempdir().unwrap();
        let ours = LocalStore::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let theirs = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        (dir, ours, theirs)
    }

    /// Puts `len` bytes of a repeating pattern at `path` and returns them.
    async fn put_pattern(store: &LocalStore, path: &Path, len: u32) -> Bytes {
        let data: Bytes = (0..len).map(|i| (i % 251) as u8).collect();
        store.put(path, data.clone().into()).await.unwrap();
        data
    }

    /// Every kind of range reads what `LocalFileSystem` reads, with the same metadata.
    #[tokio::test]
    async fn ranged_gets_answer_as_local_file_system_does() {
        let (_dir, ours, theirs) = stores();
        let path = Path::from("a/b.seg");
        put_pattern(&ours, &path, 3_000_000).await;
        for range in [
            GetRange::Bounded(0..3_000_000),
            GetRange::Bounded(1_048_576..2_097_152),
            GetRange::Bounded(2_999_999..5_000_000),
            GetRange::Offset(17),
            GetRange::Suffix(100),
        ] {
            let options = GetOptions {
                range: Some(range.clone()),
                ..Default::default()
            };
            let got = ours.get_opts(&path, options.clone()).await.unwrap();
            let want = theirs.get_opts(&path, options).await.unwrap();
            assert_eq!(got.meta, want.meta, "{range:?}");
            assert_eq!(got.range, want.range, "{range:?}");
            let want = want.bytes().await.unwrap();
            assert_eq!(got.bytes().await.unwrap(), want, "{range:?}");
        }
    }

    /// A range the page cache does not hold is read in the blocking pool, from where the read
    /// on the calling thread stopped.
    #[tokio::test]
    async fn ranges_out_of_the_page_cache_are_read_too() {
        use std::os::fd::AsRawFd;
        let (dir, ours, _) = stores();
        let path = Path::from("cold.seg");
        let data = put_pattern(&ours, &path, 4_000_000).await;
        let file = File::open(dir.path().join("cold.seg")).unwrap();
        file.sync_all().unwrap();
        let evict = || {
            // SAFETY: a plain system call on an open descriptor. The whole file: the kernel
            // drops only whole (possibly large) folios inside the range.
            let advised =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(advised, 0);
        };
        // Written back, so the kernel can drop it, and a read that does not wait stops short.
        evict();
        assert!(
            map_cached(&file, &(0..4_000_000)).is_none(),
            "mapped uncached pages"
        );
        let mut buf = Vec::with_capacity(4_000_000);
        fill(&file, &mut buf, 4_000_000, 0, Wait::No).unwrap();
        assert!(buf.len() < 4_000_000, "read it all without waiting");
        fill(&file, &mut buf, 4_000_000, 0, Wait::Yes).unwrap();
        assert_eq!(buf, data);

        evict();
        let got = ours.get_range(&path, 1_000_000..3_500_000).await.unwrap();
        assert_eq!(got, data.slice(1_000_000..3_500_000));
    }

    /// A long range the page cache holds is mapped, from any offset; a short one is copied.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn long_cached_ranges_are_mapped() {
        let (dir, ours, _) = stores();
        let path = Path::from("hot.seg");
        let data = put_pattern(&ours, &path, 2_000_000).await;
        let file = File::open(dir.path().join("hot.seg")).unwrap();
        let read: Vec<u8> = std::fs::read(dir.path().join("hot.seg")).unwrap();
        assert_eq!(read, data);
        for range in [
            0..2_000_000,
            4_097..MAP_MIN_BYTES + 4_097,
            1_048_575..2_000_000,
        ] {
            let mapped = map_cached(&file, &range).expect("a cached range is mapped");
            assert_eq!(mapped, data.slice(range.start as usize..range.end as usize));
        }
        assert!(map_cached(&file, &(10..MAP_MIN_BYTES + 9)).is_none());
        let got = ours.get_range(&path, 4_097..1_500_000).await.unwrap();
        assert_eq!(got, data.slice(4_097..1_500_000));
    }

    /// Errors keep their kind: a missing object is `NotFound`, a range past the end is refused.
    #[tokio::test]
    async fn missing_objects_and_bad_ranges_are_errors() {
        let (_dir, ours, _) = stores();
        let missing = ours.get_range(&Path::from("nope"), 0..1).await.unwrap_err();
        assert!(matches!(missing, Error::NotFound { .. }), "{missing}");
        let path = Path::from("small");
        ours.put(&path, Bytes::from_static(b"abc").into())
            .await
            .unwrap();
        assert!(ours.get_range(&path, 5..9).await.is_err());
        assert_eq!(ours.get_range(&path, 1..3).await.unwrap(), "bc");
    }
}
