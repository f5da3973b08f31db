"""Running the system without AWS: template-driven provisioning into an emulator, and the demo."""
