//! Static files under a root directory, read once and served from memory.
//!
//! A request path is percent-decoded, split into segments (empty and `.` segments dropped, `..`
//! refused: no way above the root, whatever the encoding), and looked up in a map of what was
//! read before. Only a miss touches the file system: `stat`, `..`-free join under the root, a
//! `canonicalize` that must stay under the root (symlinks out of it are refused as not found),
//! then one read of the whole file.
//!
//! Bounds: the cached contents add up to at most `limit` bytes; a file that does not fit after
//! evicting others is still served, read for that request alone (a syscall per request: the slow
//! path for files larger than the cache), up to [`MAX_FILE`]; larger files are a 500. Up to
//! [`MAX_MISSING`] paths that were not found are remembered too, so a 404 flood does no
//! syscalls. Files changed on disk are not noticed: the cache is for static content.

use foldhash::fast::RandomState;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files larger than this are refused (500) rather than read into memory per request.
pub const MAX_FILE: u64 = 1 << 30;
/// Paths remembered as not found.
pub const MAX_MISSING: usize = 16 * 1024;

/// A file's contents and its media type.
#[derive(Clone, Debug)]
pub struct File {
    pub data: Arc<[u8]>,
    pub content_type: &'static str,
}

#[derive(Debug)]
pub enum Lookup {
    Found(File),
    /// No such file, a directory without `index.html`, or a path out of the root.
    NotFound,
    Forbidden,
    /// Unreadable for another reason, or larger than [`MAX_FILE`].
    Error,
}

enum Cached {
    File(File),
    Missing,
}

pub struct FileCache {
    root: PathBuf,
    map: HashMap<Box<[u8]>, Cached, RandomState>,
    bytes: usize,
    limit: usize,
    missing: usize,
}

/// Why a path was refused before any lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum BadPath {
    /// A `%` not followed by two hex digits, or a NUL byte.
    Encoding,
    /// A `..` segment.
    Traversal,
}

/// Percent-decodes `path` and normalises it into `out` as `/seg/seg` (no empty or `.` segments;
/// the root is `/`).
pub fn normalize(path: &[u8], out: &mut Vec<u8>) -> Result<(), BadPath> {
    out.clear();
    // Most paths have no escapes: split them where they lie.
    let mut owned = Vec::new();
    let decoded = if path.contains(&b'%') {
        percent_decode(path, &mut owned)?;
        &owned[..]
    } else {
        path
    };
    if decoded.contains(&0) {
        return Err(BadPath::Encoding);
    }
    for seg in decoded.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => return Err(BadPath::Traversal),
            _ => {
                out.push(b'/');
                out.extend_from_slice(seg);
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(())
}

fn percent_decode(path: &[u8], decoded: &mut Vec<u8>) -> Result<(), BadPath> {
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (
                path.get(i + 1).and_then(|&c| hex(c)),
                path.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => decoded.push((h * 16 + l) as u8),
                _ => return Err(BadPath::Encoding),
            }
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    Ok(())
}

/// The media type for a file name, by extension.
pub fn content_type(path: &[u8]) -> &'static str {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let ext = match name.iter().rposition(|&b| b == b'.') {
        Some(dot) => &name[dot + 1..],
        None => return "application/octet-stream",
    };
    let mut lower = [0u8; 8];
    if ext.len() > lower.len() {
        return "application/octet-stream";
    }
    for (d, s) in lower.iter_mut().zip(ext) {
        *d = s.to_ascii_lowercase();
    }
    match &lower[..ext.len()] {
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"css" => "text/css; charset=utf-8",
        b"js" | b"mjs" => "text/javascript; charset=utf-8",
        b"json" => "application/json",
        b"txt" | b"md" => "text/plain; charset=utf-8",
        b"csv" => "text/csv; charset=utf-8",
        b"xml" => "application/xml",
        b"svg" => "image/svg+xml",
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"avif" => "image/avif",
        b"ico" => "image/x-icon",
        b"wasm" => "application/wasm",
        b"pdf" => "application/pdf",
        b"woff" => "font/woff",
        b"woff2" => "font/woff2",
        b"mp4" => "video/mp4",
        b"webm" => "video/webm",
        b"mp3" => "audio/mpeg",
        b"gz" => "application/gzip",
        b"zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

impl FileCache {
    /// A cache over `root` (which must be a directory) holding at most `limit` bytes of contents.
    pub fn new(root: &Path, limit: usize) -> io::Result<Self> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Self {
            root,
            map: HashMap::default(),
            bytes: 0,
            limit,
            missing: 0,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Bytes of file contents held.
    pub fn cached_bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets everything read (for a reload).
    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
        self.missing = 0;
    }

    /// The file at a path made by [`normalize`].
    pub fn get(&mut self, path: &[u8]) -> Lookup {
        match self.map.get(path) {
            Some(Cached::File(f)) => return Lookup::Found(f.clone()),
            Some(Cached::Missing) => return Lookup::NotFound,
            None => {}
        }
        match self.load(path) {
            Ok(file) => {
                let size = file.data.len();
                if size <= self.limit {
                    self.make_room(size);
                    self.bytes += size;
                    self.map.insert(path.into(), Cached::File(file.clone()));
                }
                Lookup::Found(file)
            }
            Err(e) => match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
                    if self.missing < MAX_MISSING {
                        self.missing += 1;
                        self.map.insert(path.into(), Cached::Missing);
                    }
                    Lookup::NotFound
                }
                io::ErrorKind::PermissionDenied => Lookup::Forbidden,
                _ => Lookup::Error,
            },
        }
    }

    /// Evicts cached files (in no particular order) until `size` more bytes fit.
    fn make_room(&mut self, size: usize) {
        if self.bytes + size <= self.limit {
            return;
        }
        let mut freed = 0;
        let need = self.bytes + size - self.limit;
        self.map.retain(|_, c| match c {
            Cached::File(f) if freed < need => {
                freed += f.data.len();
                false
            }
            _ => true,
        });
        self.bytes -= freed;
    }

    fn load(&self, path: &[u8]) -> io::Result<File> {
        let not_found = || io::Error::from(io::ErrorKind::NotFound);
        // `path` is `/seg/...` without `..`: a join under the root stays under it but for
        // symlinks, which the canonical form below catches.
        let mut full = self
            .root
            .join(OsStr::from_bytes(path.strip_prefix(b"/").unwrap_or(path)));
        let mut meta = std::fs::metadata(&full)?;
        let mut type_of = path;
        if meta.is_dir() {
            full.push("index.html");
            meta = std::fs::metadata(&full)?;
            type_of = b"index.html";
        }
        if !meta.is_file() {
            return Err(not_found());
        }
        if !full.canonicalize()?.starts_with(&self.root) {
            return Err(not_found());
        }
        if meta.len() > MAX_FILE {
            return Err(io::Error::other("file too large"));
        }
        let data: Arc<[u8]> = std::fs::read(&full)?.into();
        Ok(File {
            data,
            content_type: content_type(type_of),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, BadPath> {
        let mut out = Vec::new();
        normalize(p.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn normalisation_and_traversal() {
        assert_eq!(norm("/").unwrap(), "/");
        assert_eq!(norm("//a/./b/").unwrap(), "/a/b");
        assert_eq!(norm("/a%20b/%41").unwrap(), "/a b/A");
        assert_eq!(norm("/%2e%2E/etc/passwd"), Err(BadPath::Traversal));
        assert_eq!(norm("/a/../b"), Err(BadPath::Traversal));
        assert_eq!(norm("/a/..%2f..%2fetc"), Err(BadPath::Traversal));
        assert_eq!(norm("/..\\x"), Ok("/..\\x".into()));
        assert_eq!(norm("/a%2"), Err(BadPath::Encoding));
        assert_eq!(norm("/a%zz"), Err(BadPath::Encoding));
        assert_eq!(norm("/a%00b"), Err(BadPath::Encoding));
        // `...` is a file name, not a step up.
        assert_eq!(norm("/.../x").unwrap(), "/.../x");
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(b"/a/index.HTML"), "text/html; charset=utf-8");
        assert_eq!(content_type(b"/x.png"), "image/png");
        assert_eq!(content_type(b"/dir.d/noext"), "application/octet-stream");
        assert_eq!(
            content_type(b"/x.verylongextension"),
            "application/octet-stream"
        );
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("snstack-http-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_once_and_serves_from_memory() {
        let dir = TempDir::new("cache");
        std::fs::write(dir.0.join("a.txt"), b"hello").unwrap();
        std::fs::create_dir(dir.0.join("sub")).unwrap();
        std::fs::write(dir.0.join("sub/index.html"), b"<p>").unwrap();
        std::fs::create_dir(dir.0.join("empty")).unwrap();
        let mut c = FileCache::new(&dir.0, 1024).unwrap();
        let Lookup::Found(f) = c.get(b"/a.txt") else {
            panic!()
        };
        assert_eq!(
            (&f.data[..], f.content_type),
            (&b"hello"[..], "text/plain; charset=utf-8")
        );
        // Changed on disk: still the cached copy (static content).
        std::fs::write(dir.0.join("a.txt"), b"changed").unwrap();
        let Lookup::Found(f) = c.get(b"/a.txt") else {
            panic!()
        };
        assert_eq!(&f.data[..], b"hello");
        let Lookup::Found(f) = c.get(b"/sub") else {
            panic!()
        };
        assert_eq!(
            (&f.data[..], f.content_type),
            (&b"<p>"[..], "text/html; charset=utf-8")
        );
        assert!(matches!(c.get(b"/empty"), Lookup::NotFound));
        assert!(matches!(c.get(b"/nope"), Lookup::NotFound));
        assert!(matches!(c.get(b"/a.txt/x"), Lookup::NotFound));
        // A missing file created later stays missing until the cache is cleared.
        std::fs::write(dir.0.join("nope"), b"now").unwrap();
        assert!(matches!(c.get(b"/nope"), Lookup::NotFound));
        c.clear();
        assert!(matches!(c.get(b"/nope"), Lookup::Found(_)));
    }

    #[test]
    fn symlink_out_of_root_is_not_found() {
        let dir = TempDir::new("link");
        let outside = TempDir::new("outside");
        std::fs::write(outside.0.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.0.join("secret"), dir.0.join("link")).unwrap();
        std::fs::write(dir.0.join("real"), b"r").unwrap();
        std::os::unix::fs::symlink(dir.0.join("real"), dir.0.join("inner")).unwrap();
        let mut c = FileCache::new(&dir.0, 1024).unwrap();
        assert!(matches!(c.get(b"/link"), Lookup::NotFound));
        assert!(matches!(c.get(b"/inner"), Lookup::Found(_)));
    }

    #[test]
    fn bounded_size() {
        let dir = TempDir::new("bound");
        for i in 0..10 {
            std::fs::write(dir.0.join(format!("f{i}")), vec![i as u8; 300]).unwrap();
        }
        std::fs::write(dir.0.join("huge"), vec![1u8; 5000]).unwrap();
        let mut c = FileCache::new(&dir.0, 1000).unwrap();
        for i in 0..10 {
            let Lookup::Found(f) = c.get(format!("/f{i}").as_bytes()) else {
                panic!()
            };
            assert_eq!(f.data.len(), 300);
            assert!(c.cached_bytes() <= 1000);
        }
        // Larger than the whole cache: served, not kept.
        let Lookup::Found(f) = c.get(b"/huge") else {
            panic!()
        };
        assert_eq!(f.data.len(), 5000);
        assert!(c.cached_bytes() <= 1000);
    }
}
