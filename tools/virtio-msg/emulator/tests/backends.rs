// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Each `--device` kind builds its backend, and a host side that cannot be opened is reported
//! with what was being opened.

use std::path::PathBuf;
use virtio_msg_emulator::{backends::build, cli::parse_device, server::GuestMem};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmsg-backends-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn build_spec(spec: &str) -> Result<u32, String> {
    let mem: GuestMem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let d = parse_device(spec).map_err(|e| e.to_string())?;
    build(&d.kind, d.fifo, d.num, &mem)
        .map(|b| b.device_id())
        .map_err(|e| e.to_string())
}

#[test]
fn every_kind_builds() {
    let dir = scratch("ok");
    let img = dir.join("disk.img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    assert_eq!(build_spec("0:0:rng"), Ok(4));
    assert_eq!(
        build_spec(&format!("0:1:blk,file={},readonly", img.display())),
        Ok(2)
    );
    assert_eq!(
        build_spec(&format!("0:1:blk,file={},serial=abc", img.display())),
        Ok(2)
    );
    let con = dir.join("console.sock");
    assert_eq!(
        build_spec(&format!("0:2:console,socket={}", con.display())),
        Ok(3)
    );
    let net = dir.join("net.sock");
    assert_eq!(
        build_spec(&format!("0:3:net,socket={}", net.display())),
        Ok(1)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn open_failures_say_what() {
    let dir = scratch("bad");
    let missing = dir.join("missing.img");
    let e = build_spec(&format!("0:1:blk,file={}", missing.display())).unwrap_err();
    assert!(e.contains("missing.img"), "{e}");
    let odd = dir.join("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    let e = build_spec(&format!("0:1:blk,file={}", odd.display())).unwrap_err();
    assert!(e.contains("odd.img"), "{e}");
    let e = build_spec(&format!(
        "0:2:console,socket={}/no/dir/c.sock",
        dir.display()
    ))
    .unwrap_err();
    assert!(e.contains("console socket"), "{e}");
    let e = build_spec(&format!("0:3:net,socket={}/no/dir/n.sock", dir.display())).unwrap_err();
    assert!(e.contains("net socket"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
