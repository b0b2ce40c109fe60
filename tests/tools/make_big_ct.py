#!/usr/bin/python3
"""Writes a CT image whose pixel data are all zero: large decoded, tiny once deflated or RLE-compressed.

usage: make_big_ct.py OUT ROWS COLUMNS FRAMES [deflated]
"""
import sys

import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian,
                         generate_uid)


def main() -> int:
    out, rows, cols, frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    deflated = len(sys.argv) > 5 and sys.argv[5] == "deflated"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian if deflated else ExplicitVRLittleEndian
    ds = FileDataset(out, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "CT", "BIG"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = bytes(rows * cols * frames * 2)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    pydicom.dcmwrite(out, ds, write_like_original=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
