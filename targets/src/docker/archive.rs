//! Files in and out of a container through the engine's archive API (tar),
//! so reading an evaluator's results file needs no exec and no shell.

use std::io::Read;

use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use futures_util::StreamExt;

use super::container::{is_not_found, Container};
use crate::error::TargetError;

/// Room for tar headers and padding on top of the file itself.
const TAR_OVERHEAD: u64 = 64 * 1024;

impl Container {
    /// Reads the regular file `path`, refusing one over `max_bytes`.
    pub(crate) async fn read_file(
        &self,
        path: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, TargetError> {
        let options = DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let mut stream = self
            .docker
            .download_from_container(&self.name, Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) if is_not_found(&error) => {
                    return Err(TargetError::NotAFile {
                        path: path.to_string(),
                    })
                }
                Err(error) => return Err(error.into()),
            };
            archive.extend_from_slice(&chunk);
            if archive.len() as u64 > max_bytes + TAR_OVERHEAD {
                return Err(TargetError::FileTooLarge {
                    path: path.to_string(),
                    max: max_bytes,
                });
            }
        }
        untar_one(&archive, path, max_bytes)
    }

    /// Writes `bytes` to `path` (owner root, `mode`); the parent directory
    /// must exist.
    pub(crate) async fn write_file(
        &self,
        path: &str,
        bytes: &[u8],
        mode: u32,
    ) -> Result<(), TargetError> {
        let (parent, name) = split_path(path)?;
        let archive = tar_one(name, bytes, mode)?;
        let options = UploadToContainerOptions {
            path: parent.to_string(),
            ..Default::default()
        };
        self.docker
            .upload_to_container(
                &self.name,
                Some(options),
                bollard::body_full(archive.into()),
            )
            .await?;
        Ok(())
    }
}

/// The contents of the archive's single regular file.
fn untar_one(archive: &[u8], path: &str, max_bytes: u64) -> Result<Vec<u8>, TargetError> {
    let mut reader = tar::Archive::new(archive);
    let mut entries = reader.entries().map_err(TargetError::Tar)?;
    let not_a_file = || TargetError::NotAFile {
        path: path.to_string(),
    };
    let mut entry = entries
        .next()
        .ok_or_else(not_a_file)?
        .map_err(TargetError::Tar)?;
    if !entry.header().entry_type().is_file() {
        return Err(not_a_file());
    }
    let size = entry.header().size().map_err(TargetError::Tar)?;
    if size > max_bytes {
        return Err(TargetError::FileTooLarge {
            path: path.to_string(),
            max: max_bytes,
        });
    }
    let mut contents = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut contents).map_err(TargetError::Tar)?;
    Ok(contents)
}

/// A tar holding one file `name`.
pub(crate) fn tar_one(name: &str, bytes: &[u8], mode: u32) -> Result<Vec<u8>, TargetError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0),
    );
    header.set_entry_type(tar::EntryType::Regular);
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_data(&mut header, name, bytes)
        .map_err(TargetError::Tar)?;
    builder.into_inner().map_err(TargetError::Tar)
}

/// `/a/b/c` → (`/a/b`, `c`); only absolute paths with a file name.
fn split_path(path: &str) -> Result<(&str, &str), TargetError> {
    let invalid = || TargetError::InvalidPath(path.to_string());
    let (parent, name) = path.rsplit_once('/').ok_or_else(invalid)?;
    if !path.starts_with('/') || name.is_empty() || name == "." || name == ".." {
        return Err(invalid());
    }
    Ok((if parent.is_empty() { "/" } else { parent }, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_parent_and_name() {
        assert_eq!(split_path("/etc/issue").unwrap(), ("/etc", "issue"));
        assert_eq!(split_path("/x").unwrap(), ("/", "x"));
        assert!(split_path("relative").is_err());
        assert!(split_path("/etc/").is_err());
    }

    #[test]
    fn a_tar_of_one_file_reads_back() {
        let archive = tar_one("f", b"data", 0o600).unwrap();
        assert_eq!(untar_one(&archive, "/f", 10).unwrap(), b"data");
        assert!(matches!(
            untar_one(&archive, "/f", 3),
            Err(TargetError::FileTooLarge { .. })
        ));
    }
}
