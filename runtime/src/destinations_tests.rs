use super::*;
use std::collections::BTreeMap;

/// An image as a map of paths to entries (everything else missing).
struct Image(BTreeMap<PathBuf, Entry>);

impl Image {
    fn new(entries: &[(&str, Entry)]) -> Image {
        Image(
            entries
                .iter()
                .map(|(p, e)| (PathBuf::from(p), e.clone()))
                .collect(),
        )
    }
}

impl Lookup for Image {
    fn entry(&self, path: &Path) -> std::io::Result<Entry> {
        Ok(self.0.get(path).cloned().unwrap_or(Entry::Missing))
    }
}

fn link(t: &str) -> Entry {
    Entry::Symlink(PathBuf::from(t))
}

fn bind(d: &str) -> MountDest<'_> {
    MountDest {
        destination: Path::new(d),
        fs: Some("bind"),
    }
}

fn one(image: &Image, dest: &str) -> Result<PathBuf, DestinationError> {
    let rewrites = plan(&[bind(dest)], image)?;
    Ok(rewrites
        .first()
        .map(|r| r.to.clone())
        .unwrap_or_else(|| lexical(Path::new(dest))))
}

#[test]
fn symlinked_components_resolve_inside_the_rootfs() {
    let image = Image::new(&[
        ("/var", Entry::Dir),
        ("/var/data", Entry::Dir),
        ("/data", link("/var/data")),
        ("/rel", link("var/data")),
        ("/dangling", link("/srv/none")),
        ("/etc", Entry::Dir),
        (
            "/etc/resolv.conf",
            link("../run/systemd/resolve/stub-resolv.conf"),
        ),
    ]);
    assert_eq!(one(&image, "/data/x").unwrap(), Path::new("/var/data/x"));
    assert_eq!(one(&image, "/rel/x").unwrap(), Path::new("/var/data/x"));
    assert_eq!(
        one(&image, "/dangling/x").unwrap(),
        Path::new("/srv/none/x")
    );
    assert_eq!(
        one(&image, "/etc/resolv.conf").unwrap(),
        Path::new("/run/systemd/resolve/stub-resolv.conf")
    );
    assert_eq!(one(&image, "/data/../etc").unwrap(), Path::new("/var/etc"));
}

#[test]
fn links_aimed_out_of_the_rootfs_stay_in_it() {
    let image = Image::new(&[
        ("/etc", Entry::Dir),
        ("/etc/evil", link("/../../../host/path")),
        ("/etc/up", link("../../../../../host")),
    ]);
    assert_eq!(one(&image, "/etc/evil").unwrap(), Path::new("/host/path"));
    assert_eq!(
        one(&image, "/etc/evil/sub").unwrap(),
        Path::new("/host/path/sub")
    );
    assert_eq!(one(&image, "/etc/up/x").unwrap(), Path::new("/host/x"));
    assert_eq!(one(&image, "/../../x").unwrap(), Path::new("/x"));
}

#[test]
fn plain_destinations_are_not_rewritten() {
    let image = Image::new(&[("/etc", Entry::Dir), ("/etc/hosts", Entry::Other)]);
    assert!(plan(&[bind("/etc/hosts"), bind("/mnt/new")], &image)
        .unwrap()
        .is_empty());
    // Only spelled differently: libcontainer cleans it the same way.
    assert!(plan(&[bind("/etc//./hosts")], &image).unwrap().is_empty());
}

#[test]
fn a_loop_names_the_destination_and_the_link() {
    let image = Image::new(&[
        ("/etc", Entry::Dir),
        ("/etc/loop", link("/etc/loop")),
        ("/a", link("/b")),
        ("/b", link("/a")),
    ]);
    let e = one(&image, "/etc/loop/x").unwrap_err();
    assert!(matches!(&e, DestinationError::Loop { at, .. } if at == Path::new("/etc/loop")));
    let text = e.to_string();
    assert!(
        text.contains("/etc/loop/x") && text.contains("symlink loop"),
        "{text}"
    );
    assert!(matches!(
        one(&image, "/a").unwrap_err(),
        DestinationError::Loop { .. }
    ));
}

#[test]
fn forty_links_are_followed_not_more() {
    let mut entries = vec![("/l40".to_string(), Entry::Dir)];
    for i in 0..40 {
        entries.push((format!("/l{i}"), link(&format!("/l{}", i + 1))));
    }
    let entries: Vec<(&str, Entry)> = entries
        .iter()
        .map(|(p, e)| (p.as_str(), e.clone()))
        .collect();
    let image = Image::new(&entries);
    assert_eq!(one(&image, "/l0/x").unwrap(), Path::new("/l40/x"));
    let mut longer = entries.clone();
    longer.push(("/m", link("/l0")));
    assert!(matches!(
        one(&Image::new(&longer), "/m/x").unwrap_err(),
        DestinationError::Loop { .. }
    ));
}

#[test]
fn a_file_in_the_way_is_named() {
    let image = Image::new(&[("/etc", Entry::Dir), ("/etc/passwd", Entry::Other)]);
    let e = one(&image, "/etc/passwd/x").unwrap_err();
    assert_eq!(
        e,
        DestinationError::NotADirectory {
            index: 0,
            destination: PathBuf::from("/etc/passwd/x"),
            component: PathBuf::from("/etc/passwd"),
        }
    );
    assert!(e
        .to_string()
        .contains("/etc/passwd in the image is not a directory"));
    // The file itself is a fine destination (a file bind mount).
    assert_eq!(
        one(&image, "/etc/passwd").unwrap(),
        Path::new("/etc/passwd")
    );
}

#[test]
fn proc_and_sysfs_need_an_ordinary_directory() {
    let image = Image::new(&[
        ("/proc", link("/tmp")),
        ("/sys", Entry::Other),
        ("/tmp", Entry::Dir),
    ]);
    let proc = MountDest {
        destination: Path::new("/proc"),
        fs: Some("proc"),
    };
    let e = plan(&[proc], &image).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("/proc in the image is a symlink (to /tmp)")
            && text.contains("ordinary directory"),
        "{text}"
    );
    let sys = MountDest {
        destination: Path::new("/sys"),
        fs: Some("sysfs"),
    };
    assert!(matches!(
        plan(&[sys], &image).unwrap_err(),
        DestinationError::SpecialNotDir { .. }
    ));
    // A bind at /proc/x through the link is an ordinary mount: resolved.
    assert_eq!(one(&image, "/proc/x").unwrap(), Path::new("/tmp/x"));
}

#[test]
fn below_an_earlier_mount_the_image_is_not_looked_at() {
    // The image's /dev/shm is a link, but /dev is a tmpfs of the spec by then.
    let image = Image::new(&[("/dev", Entry::Dir), ("/dev/shm", link("/run/shm"))]);
    let dev = MountDest {
        destination: Path::new("/dev"),
        fs: Some("tmpfs"),
    };
    let shm = MountDest {
        destination: Path::new("/dev/shm"),
        fs: Some("tmpfs"),
    };
    assert!(plan(&[dev.clone(), shm.clone()], &image)
        .unwrap()
        .is_empty());
    // Without the earlier mount, it is resolved.
    assert_eq!(plan(&[shm], &image).unwrap()[0].to, Path::new("/run/shm"));
    // A link into an earlier mount stops there too.
    let image = Image::new(&[("/dev", Entry::Dir), ("/s", link("/dev/shm/y"))]);
    let r = plan(&[dev, bind("/s/z")], &image).unwrap();
    assert_eq!(r[0].to, Path::new("/dev/shm/y/z"));
}

#[test]
fn relative_destinations_start_at_the_root() {
    let image = Image::new(&[("/data", link("/var/data"))]);
    assert_eq!(one(&image, "data/x").unwrap(), Path::new("/var/data/x"));
}
