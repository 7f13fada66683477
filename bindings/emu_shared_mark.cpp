// emu_shared_mark.cpp -- compiled twice, linked just before (-DCN_EMU_MARK_BEGIN)
// and just after the kernel objects: the linker lays out .tbss in input order,
// so every `__shared__` (thread_local) variable of the kernels lies between
// cn_emu_shared_begin and cn_emu_shared_end in each OS thread's TLS block, and
// the runtime can fill static shared memory with 0xFF before every block.
#ifdef CN_EMU_MARK_BEGIN
alignas(64) thread_local unsigned char cn_emu_shared_begin[1];
#else
alignas(64) thread_local unsigned char cn_emu_shared_end[1];
#endif
