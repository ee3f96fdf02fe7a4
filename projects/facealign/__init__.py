"""Chapter 3: 68-point facial landmarks — accuracy (NME) and stability (STD/SDD), annotation noise, pseudo-video
augmentation and optical-flow fusion."""
