/* The small DICOM data dictionary the reader needs: the VR of every tag it
 * reads (implicit-VR files carry no VR), of the common sequences (so that
 * implicit-VR sequences with a defined length are recognised without
 * guessing) and a name for messages. Not a full PS3.6 dictionary: unknown
 * tags are "UN" and are still parsed, their sequences found by shape. */
#include "io/dicom_priv.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    uint32_t tag;
    char vr[3];
    const char *name;
} dict_entry_t;

#define T(g, e) MP_DICOM_TAG(0x##g, 0x##e)

/* Sorted by tag (checked by the bisection's callers in tests). */
static const dict_entry_t dict[] = {
    {T(0002, 0000), "UL", "FileMetaInformationGroupLength"},
    {T(0002, 0001), "OB", "FileMetaInformationVersion"},
    {T(0002, 0002), "UI", "MediaStorageSOPClassUID"},
    {T(0002, 0003), "UI", "MediaStorageSOPInstanceUID"},
    {T(0002, 0010), "UI", "TransferSyntaxUID"},
    {T(0002, 0012), "UI", "ImplementationClassUID"},
    {T(0002, 0013), "SH", "ImplementationVersionName"},
    {T(0004, 1200), "UL", "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity"},
    {T(0004, 1202), "UL", "OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity"},
    {T(0004, 1220), "SQ", "DirectoryRecordSequence"},
    {T(0004, 1400), "UL", "OffsetOfTheNextDirectoryRecord"},
    {T(0004, 1410), "US", "RecordInUseFlag"},
    {T(0004, 1420), "UL", "OffsetOfReferencedLowerLevelDirectoryEntity"},
    {T(0004, 1430), "CS", "DirectoryRecordType"},
    {T(0004, 1500), "CS", "ReferencedFileID"},
    {T(0004, 1510), "UI", "ReferencedSOPClassUIDInFile"},
    {T(0004, 1511), "UI", "ReferencedSOPInstanceUIDInFile"},
    {T(0004, 1512), "UI", "ReferencedTransferSyntaxUIDInFile"},
    {T(0008, 0005), "CS", "SpecificCharacterSet"},
    {T(0008, 0008), "CS", "ImageType"},
    {T(0008, 0016), "UI", "SOPClassUID"},
    {T(0008, 0018), "UI", "SOPInstanceUID"},
    {T(0008, 0020), "DA", "StudyDate"},
    {T(0008, 0021), "DA", "SeriesDate"},
    {T(0008, 0030), "TM", "StudyTime"},
    {T(0008, 0060), "CS", "Modality"},
    {T(0008, 0070), "LO", "Manufacturer"},
    {T(0008, 1032), "SQ", "ProcedureCodeSequence"},
    {T(0008, 103E), "LO", "SeriesDescription"},
    {T(0008, 1111), "SQ", "ReferencedPerformedProcedureStepSequence"},
    {T(0008, 1115), "SQ", "ReferencedSeriesSequence"},
    {T(0008, 1140), "SQ", "ReferencedImageSequence"},
    {T(0008, 1155), "UI", "ReferencedSOPInstanceUID"},
    {T(0008, 1199), "SQ", "ReferencedSOPSequence"},
    {T(0008, 1250), "SQ", "RelatedSeriesSequence"},
    {T(0008, 2112), "SQ", "SourceImageSequence"},
    {T(0008, 9215), "SQ", "DerivationCodeSequence"},
    {T(0010, 0010), "PN", "PatientName"},
    {T(0010, 0020), "LO", "PatientID"},
    {T(0018, 0050), "DS", "SliceThickness"},
    {T(0018, 0086), "IS", "EchoNumbers"},
    {T(0018, 0088), "DS", "SpacingBetweenSlices"},
    {T(0018, 1120), "DS", "GantryDetectorTilt"},
    {T(0018, 1164), "DS", "ImagerPixelSpacing"},
    {T(0018, 9114), "SQ", "MREchoSequence"},
    {T(0020, 000D), "UI", "StudyInstanceUID"},
    {T(0020, 000E), "UI", "SeriesInstanceUID"},
    {T(0020, 0011), "IS", "SeriesNumber"},
    {T(0020, 0012), "IS", "AcquisitionNumber"},
    {T(0020, 0013), "IS", "InstanceNumber"},
    {T(0020, 0032), "DS", "ImagePositionPatient"},
    {T(0020, 0037), "DS", "ImageOrientationPatient"},
    {T(0020, 0052), "UI", "FrameOfReferenceUID"},
    {T(0020, 0100), "IS", "TemporalPositionIdentifier"},
    {T(0020, 1041), "DS", "SliceLocation"},
    {T(0020, 9056), "SH", "StackID"},
    {T(0020, 9057), "UL", "InStackPositionNumber"},
    {T(0020, 9111), "SQ", "FrameContentSequence"},
    {T(0020, 9113), "SQ", "PlanePositionSequence"},
    {T(0020, 9116), "SQ", "PlaneOrientationSequence"},
    {T(0020, 9128), "UL", "TemporalPositionIndex"},
    {T(0020, 9157), "UL", "DimensionIndexValues"},
    {T(0020, 9221), "SQ", "DimensionOrganizationSequence"},
    {T(0020, 9222), "SQ", "DimensionIndexSequence"},
    {T(0028, 0002), "US", "SamplesPerPixel"},
    {T(0028, 0004), "CS", "PhotometricInterpretation"},
    {T(0028, 0006), "US", "PlanarConfiguration"},
    {T(0028, 0008), "IS", "NumberOfFrames"},
    {T(0028, 0009), "AT", "FrameIncrementPointer"},
    {T(0028, 0010), "US", "Rows"},
    {T(0028, 0011), "US", "Columns"},
    {T(0028, 0030), "DS", "PixelSpacing"},
    {T(0028, 0100), "US", "BitsAllocated"},
    {T(0028, 0101), "US", "BitsStored"},
    {T(0028, 0102), "US", "HighBit"},
    {T(0028, 0103), "US", "PixelRepresentation"},
    {T(0028, 1050), "DS", "WindowCenter"},
    {T(0028, 1051), "DS", "WindowWidth"},
    {T(0028, 1052), "DS", "RescaleIntercept"},
    {T(0028, 1053), "DS", "RescaleSlope"},
    {T(0028, 1054), "LO", "RescaleType"},
    {T(0028, 3000), "SQ", "ModalityLUTSequence"},
    {T(0028, 3010), "SQ", "VOILUTSequence"},
    {T(0028, 9110), "SQ", "PixelMeasuresSequence"},
    {T(0028, 9132), "SQ", "FrameVOILUTSequence"},
    {T(0028, 9145), "SQ", "PixelValueTransformationSequence"},
    {T(0040, 0260), "SQ", "PerformedProtocolCodeSequence"},
    {T(0040, 0275), "SQ", "RequestAttributesSequence"},
    {T(0040, 08EA), "SQ", "MeasurementUnitsCodeSequence"},
    {T(0040, A043), "SQ", "ConceptNameCodeSequence"},
    {T(0040, A168), "SQ", "ConceptCodeSequence"},
    {T(0040, A300), "SQ", "MeasuredValueSequence"},
    {T(0040, A370), "SQ", "ReferencedRequestSequence"},
    {T(0040, A375), "SQ", "CurrentRequestedProcedureEvidenceSequence"},
    {T(0040, A504), "SQ", "ContentTemplateSequence"},
    {T(0040, A730), "SQ", "ContentSequence"},
    {T(0054, 0016), "SQ", "RadiopharmaceuticalInformationSequence"},
    {T(0054, 0220), "SQ", "ViewCodeSequence"},
    {T(3004, 000C), "DS", "GridFrameOffsetVector"},
    {T(3004, 000E), "DS", "DoseGridScaling"},
    {T(3006, 0010), "SQ", "ReferencedFrameOfReferenceSequence"},
    {T(3006, 0012), "SQ", "RTReferencedStudySequence"},
    {T(3006, 0014), "SQ", "RTReferencedSeriesSequence"},
    {T(3006, 0016), "SQ", "ContourImageSequence"},
    {T(3006, 0020), "SQ", "StructureSetROISequence"},
    {T(3006, 0039), "SQ", "ROIContourSequence"},
    {T(3006, 0040), "SQ", "ContourSequence"},
    {T(3006, 0080), "SQ", "RTROIObservationsSequence"},
    {T(300A, 0010), "SQ", "DoseReferenceSequence"},
    {T(300A, 0040), "SQ", "ToleranceTableSequence"},
    {T(300A, 0070), "SQ", "FractionGroupSequence"},
    {T(300A, 00B0), "SQ", "BeamSequence"},
    {T(300A, 00B6), "SQ", "BeamLimitingDeviceSequence"},
    {T(300A, 0111), "SQ", "ControlPointSequence"},
    {T(300A, 011A), "SQ", "BeamLimitingDevicePositionSequence"},
    {T(300A, 0180), "SQ", "PatientSetupSequence"},
    {T(300C, 0002), "SQ", "ReferencedRTPlanSequence"},
    {T(300C, 0004), "SQ", "ReferencedBeamSequence"},
    {T(300C, 0060), "SQ", "ReferencedStructureSetSequence"},
    {T(300C, 0080), "SQ", "ReferencedDoseSequence"},
    {T(5200, 9229), "SQ", "SharedFunctionalGroupsSequence"},
    {T(5200, 9230), "SQ", "PerFrameFunctionalGroupsSequence"},
    {T(7FE0, 0001), "OV", "ExtendedOffsetTable"},
    {T(7FE0, 0002), "OV", "ExtendedOffsetTableLengths"},
    {T(7FE0, 0008), "OF", "FloatPixelData"},
    {T(7FE0, 0009), "OD", "DoubleFloatPixelData"},
    {T(7FE0, 0010), "OW", "PixelData"},
    {T(FFFE, E000), "  ", "Item"},
    {T(FFFE, E00D), "  ", "ItemDelimitationItem"},
    {T(FFFE, E0DD), "  ", "SequenceDelimitationItem"},
};

static const dict_entry_t *dict_find(uint32_t tag) {
    size_t lo = 0, hi = sizeof dict / sizeof dict[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (dict[mid].tag == tag) return &dict[mid];
        if (dict[mid].tag < tag) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *mp_dicom_dict_vr(uint32_t tag) {
    const dict_entry_t *e = dict_find(tag);
    if (e) return e->vr;
    uint16_t g = (uint16_t)(tag >> 16), el = (uint16_t)tag;
    if (el == 0) return "UL";                               /* group length */
    if ((g & 1) && el >= 0x10 && el <= 0xFF) return "LO";   /* private creator */
    return "UN";
}

const char *mp_dicom_tag_name(uint32_t tag) {
    const dict_entry_t *e = dict_find(tag);
    return e ? e->name : NULL;
}

void mp_dicom_tag_str(uint32_t tag, char *buf, size_t cap) {
    const char *name = mp_dicom_tag_name(tag);
    snprintf(buf, cap, "(%04X,%04X)%s%s", (unsigned)(tag >> 16), (unsigned)(tag & 0xFFFF), name ? " " : "",
             name ? name : "");
}

static const char known_vrs[][3] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO",
                                    "LT", "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ",
                                    "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT",
                                    "UV"};

int mp_dicom_vr_known(const char vr[2]) {
    for (size_t i = 0; i < sizeof known_vrs / sizeof known_vrs[0]; i++)
        if (vr[0] == known_vrs[i][0] && vr[1] == known_vrs[i][1]) return 1;
    return 0;
}

int mp_dicom_vr_long(const char vr[2]) {
    static const char long_vrs[][3] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
    for (size_t i = 0; i < sizeof long_vrs / sizeof long_vrs[0]; i++)
        if (vr[0] == long_vrs[i][0] && vr[1] == long_vrs[i][1]) return 1;
    return 0;
}
