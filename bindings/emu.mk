# CPU emulation build (placeholder until the emulation lands).
emu:
	@echo "emulation: not built yet"
emu-asan:
	@echo "emulation: not built yet"
