//! The ELF checks: every ELF file in a layer must be built for the layer's architecture, and need no more of
//! glibc and libstdc++ than the runtime offers ([`super::platform`]).
//!
//! A native build on a host of another machine (or an sdist that compiled for the host) silently produces
//! wheels Lambda can't load: the most common broken layer. Reading the ELF header's `e_machine` of every file
//! (not only `*.so`: executables and versioned `libfoo.so.1` count too) catches it before upload. The symbol
//! versions a file needs (its `SHT_GNU_VERNEED` section) are read with the `object` crate.

use std::{fs::File, io::Read, path::Path};

use object::{
    Endianness,
    read::elf::{FileHeader, SectionTable},
};

use crate::request::Architecture;

/// `e_machine` of AArch64.
pub const EM_AARCH64: u16 = 183;
/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;

/// The `e_machine` a layer for `architecture` must carry.
pub fn expected_machine(architecture: Architecture) -> u16 {
    match architecture {
        Architecture::Arm64 => EM_AARCH64,
        Architecture::X86_64 => EM_X86_64,
    }
}

/// A readable name for an `e_machine` value.
pub fn machine_name(machine: u16) -> String {
    match machine {
        EM_AARCH64 => "AArch64".to_owned(),
        EM_X86_64 => "x86-64".to_owned(),
        3 => "i386".to_owned(),
        40 => "ARM".to_owned(),
        243 => "RISC-V".to_owned(),
        other => format!("e_machine {other}"),
    }
}

/// `e_machine` of an ELF header, or `None` when the bytes are not an ELF file. `header` holds the first
/// 20 bytes (or fewer, for a short file).
pub fn elf_machine(header: &[u8]) -> Option<u16> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return None;
    }
    let bytes = [header[18], header[19]];
    // EI_DATA: 1 little-endian, 2 big-endian.
    Some(if header[5] == 2 {
        u16::from_be_bytes(bytes)
    } else {
        u16::from_le_bytes(bytes)
    })
}

/// `e_machine` of the file at `path`, or `None` when it is not an ELF file.
pub fn file_machine(path: &Path) -> std::io::Result<Option<u16>> {
    let mut header = Vec::with_capacity(20);
    File::open(path)?.take(20).read_to_end(&mut header)?;
    Ok(elf_machine(&header))
}

/// The symbol versions an ELF file needs, e.g. `GLIBC_2.17`, `GLIBCXX_3.4.21` (each once, sorted).
/// `Err` for a file that starts like ELF but can't be parsed.
pub fn version_needs(data: &[u8]) -> Result<Vec<String>, String> {
    let mut names = match data.get(4) {
        // EI_CLASS: 1 for 32-bit, 2 for 64-bit files.
        Some(1) => needs_of::<object::elf::FileHeader32<Endianness>>(data),
        Some(2) => needs_of::<object::elf::FileHeader64<Endianness>>(data),
        _ => Err("not an ELF file of a known class".to_owned()),
    }?;
    names.sort();
    names.dedup();
    Ok(names)
}

fn needs_of<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<Vec<String>, String> {
    let header = Elf::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let sections: SectionTable<'_, Elf, &[u8]> =
        header.sections(endian, data).map_err(|e| e.to_string())?;
    let Some((mut needs, link)) = sections
        .gnu_verneed(endian, data)
        .map_err(|e| e.to_string())?
    else {
        return Ok(Vec::new());
    };
    let strings = sections
        .strings(endian, data, link)
        .map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    while let Some((_, mut aux)) = needs.next().map_err(|e| e.to_string())? {
        while let Some(entry) = aux.next().map_err(|e| e.to_string())? {
            let name = entry.name(endian, strings).map_err(|e| e.to_string())?;
            names.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class_data: u8, machine: [u8; 2]) -> Vec<u8> {
        let mut h = b"\x7fELF\x02".to_vec();
        h.push(class_data);
        h.resize(18, 0);
        h.extend(machine);
        h.extend([1, 0, 0, 0]);
        h
    }

    #[test]
    fn reads_e_machine_in_either_byte_order() {
        assert_eq!(elf_machine(&header(1, [183, 0])), Some(EM_AARCH64));
        assert_eq!(elf_machine(&header(1, [62, 0])), Some(EM_X86_64));
        assert_eq!(elf_machine(&header(2, [0, 183])), Some(EM_AARCH64));
    }

    #[test]
    fn other_files_are_not_elf() {
        assert_eq!(elf_machine(b"\x7fELF"), None, "too short");
        assert_eq!(elf_machine(b"#!/usr/bin/env python3\nprint(1)\n"), None);
        assert_eq!(elf_machine(&[0u8; 64]), None);
    }

    #[test]
    fn reads_the_running_binary() {
        let exe = std::env::current_exe().unwrap();
        let expected = if cfg!(target_arch = "aarch64") {
            EM_AARCH64
        } else {
            EM_X86_64
        };
        assert_eq!(file_machine(&exe).unwrap(), Some(expected));
    }

    #[test]
    fn reads_the_glibc_versions_the_running_binary_needs() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let needs = version_needs(&exe).unwrap();
        assert!(
            needs.iter().any(|n| n.starts_with("GLIBC_2.")),
            "a Rust test binary links glibc: {needs:?}"
        );
        let mut sorted = needs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(needs, sorted);
        assert!(version_needs(b"\x7fELF\x02\x01garbage").is_err());
        assert!(version_needs(b"#!/bin/sh").is_err());
    }

    #[test]
    fn expected_machine_follows_the_architecture() {
        assert_eq!(expected_machine(Architecture::Arm64), 183);
        assert_eq!(expected_machine(Architecture::X86_64), 62);
        assert_eq!(machine_name(183), "AArch64");
        assert_eq!(machine_name(62), "x86-64");
        assert_eq!(machine_name(8), "e_machine 8");
    }
}
