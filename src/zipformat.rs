//! The zip format's record signatures and ids (APPNOTE 6.3), shared by the writer (`builder::archive`) and the
//! reader (`zipcheck`), so both speak of the same records.

pub(crate) const SIG_LOCAL: u32 = 0x0403_4b50;
pub(crate) const SIG_CENTRAL: u32 = 0x0201_4b50;
pub(crate) const SIG_EOCD: u32 = 0x0605_4b50;
pub(crate) const SIG_ZIP64_EOCD: u32 = 0x0606_4b50;
pub(crate) const SIG_ZIP64_LOCATOR: u32 = 0x0706_4b50;
/// Extra-field header id of the ZIP64 extended information.
pub(crate) const ZIP64_EXTRA_ID: u16 = 0x0001;
