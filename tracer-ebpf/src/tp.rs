//! Reading a classic tracepoint's record: fields at the offsets of [`tracer_common::tp`], which
//! the loader checks against the running kernel's format files before it loads anything, and
//! `__data_loc` strings.

use aya_ebpf::{
    helpers::generated::bpf_probe_read_kernel_str, programs::TracePointContext, EbpfContext,
};
use tracer_common::TpField;

/// Reads the `T` of `field` of a tracepoint's record directly (no helper call).
///
/// # Safety
/// `field` must be a field of the tracepoint's record, of type `T`, aligned for `T`.
#[inline(always)]
pub unsafe fn field<T: Copy>(ctx: &TracePointContext, field: TpField) -> T {
    // SAFETY: per the contract, the read stays inside the record; the verifier checks the
    // access against the tracepoint's record size.
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(field.offset) as *const T) }
}

/// Where the `__data_loc` field `field` of a tracepoint's record points: its string, inside
/// the record.
///
/// # Safety
/// `field` must be a `__data_loc` field of the tracepoint's record.
#[inline(always)]
pub unsafe fn data_loc(ctx: &TracePointContext, field: TpField) -> *const u8 {
    // SAFETY: per the contract, a u32 of the record.
    let loc = unsafe { self::field::<u32>(ctx, field) };
    // __data_loc: low 16 bits are the offset from the record's start, high 16 bits the length.
    (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xffff) as usize)
}

/// Copies the kernel string at `src` into `dst` (`len` bytes, NUL-terminated). Returns the
/// bytes copied without the NUL, 0 on failure.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
#[inline(always)]
pub unsafe fn read_kernel_str(dst: *mut u8, len: u32, src: *const u8) -> u32 {
    // SAFETY: the caller guarantees `dst` holds `len` bytes; the helper bounds the copy by `len`,
    // reads kernel memory safely and NUL-terminates.
    let copied = unsafe { bpf_probe_read_kernel_str(dst.cast(), len, src.cast()) };
    if copied > 0 {
        (copied - 1) as u32
    } else {
        0
    }
}
