"""Face detection (MTCNN, 5 points) and template alignment shared by the face projects (chapters 2, 3, 5)."""
