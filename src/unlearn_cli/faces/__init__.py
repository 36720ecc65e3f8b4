"""Faces: detection and alignment (MTCNN), the regions a photo is protected in, face embedders
(facenet's for matching, dlib's as an evaluation attacker only)."""
