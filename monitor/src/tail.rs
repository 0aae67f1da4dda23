//! Following a log file line by line, as `tail -F` does: complete lines only (a line
//! being written has no newline yet), and rotation followed (a new file at the path, or
//! the file truncated): the old file is finished first, then the new one read from its
//! start.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct LineTail {
    path: PathBuf,
    /// The open file and its inode.
    file: Option<(std::fs::File, u64)>,
    offset: u64,
    partial: Vec<u8>,
}

impl LineTail {
    /// Reads the file from its start (once it exists).
    pub fn from_start(path: &Path) -> LineTail {
        LineTail {
            path: path.to_path_buf(),
            file: None,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// Reads only what is appended from now on; the file must exist.
    pub fn from_end(path: &Path) -> std::io::Result<LineTail> {
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        Ok(LineTail {
            path: path.to_path_buf(),
            offset: meta.len(),
            file: Some((file, meta.ino())),
            partial: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `on_line` for every complete line appended since the last poll. A missing
    /// file is not an error (nothing was written yet, or it is being rotated).
    pub fn poll(&mut self, mut on_line: impl FnMut(&str)) -> std::io::Result<()> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let rotated = match &self.file {
            Some((_, inode)) => *inode != meta.ino() || meta.len() < self.offset,
            None => true,
        };
        if rotated {
            if let Some((mut old, _)) = self.file.take() {
                // Lines written before the rename still count.
                let _ = self.read_from(&mut old, &mut on_line);
            }
            self.file = Some((std::fs::File::open(&self.path)?, meta.ino()));
            self.offset = 0;
            self.partial.clear();
        }
        match self.file.take() {
            Some((mut file, inode)) => {
                let result = self.read_from(&mut file, &mut on_line);
                self.file = Some((file, inode));
                result
            }
            None => Ok(()),
        }
    }

    fn read_from(
        &mut self,
        file: &mut std::fs::File,
        on_line: &mut impl FnMut(&str),
    ) -> std::io::Result<()> {
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        if let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') {
            let complete: Vec<u8> = self.partial.drain(..=end).collect();
            for line in complete.split(|b| *b == b'\n') {
                on_line(&String::from_utf8_lossy(line));
            }
        }
        Ok(())
    }
}
