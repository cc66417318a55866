// Package dicomgen makes small synthetic DICOM studies (Part-10 files with
// fresh UIDs and a fake patient) for tests and the demo, so nothing real or
// identifiable ever goes through the pipeline.
package dicomgen

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"time"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/frame"
	"github.com/suyashkumar/dicom/pkg/tag"
	"github.com/suyashkumar/dicom/pkg/uid"
)

// Fixed values of every generated instance.
const (
	// SecondaryCaptureSOPClassUID is the SOP class of the generated images.
	SecondaryCaptureSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
	// DefaultPatientName and DefaultPatientID mark the data as synthetic.
	DefaultPatientName = "DEMO^PATIENT"
	DefaultPatientID   = "DEMO-0001"
	// implementationClassUID identifies this generator in the file meta
	// header (a fixed UUID-derived 2.25 UID).
	implementationClassUID    = "2.25.94806155366563410916328734061451387914"
	implementationVersionName = "OGB_DICOMGEN_1"
	// MaxInstances bounds one study so a typo cannot fill a disk.
	MaxInstances = 10000
)

// Options shape a generated study; zero values take the defaults.
type Options struct {
	// Instances is the number of images in the single series (default 1).
	Instances int
	// PatientName (default DEMO^PATIENT) and PatientID (default DEMO-0001).
	PatientName, PatientID string
	// StudyDescription defaults to "orthanc-gcp-broker synthetic study".
	StudyDescription string
	// Rows and Columns of each 8-bit MONOCHROME2 image (default 64 x 64).
	Rows, Columns int
	// Now stamps StudyDate/StudyTime (default time.Now).
	Now func() time.Time
}

// StudyInfo describes a generated study.
type StudyInfo struct {
	StudyUID, SeriesUID    string
	SOPInstanceUIDs        []string // in the order of Files
	PatientName, PatientID string
	// Files are the DICOM Part-10 files (Explicit VR Little Endian), one per instance.
	Files [][]byte
}

// Study generates one study with one series of n 64x64 8-bit MONOCHROME2
// instances for the patient DEMO^PATIENT, with fresh UIDs.
func Study(n int) (StudyInfo, error) {
	return Generate(Options{Instances: n})
}

// Generate makes a study as described by opts.
func Generate(opts Options) (StudyInfo, error) {
	if opts.Instances == 0 {
		opts.Instances = 1
	}
	if opts.Instances < 0 || opts.Instances > MaxInstances {
		return StudyInfo{}, fmt.Errorf("dicomgen: %d instances, want 1..%d", opts.Instances, MaxInstances)
	}
	if opts.Rows == 0 {
		opts.Rows = 64
	}
	if opts.Columns == 0 {
		opts.Columns = 64
	}
	if opts.Rows < 1 || opts.Columns < 1 || opts.Rows > 4096 || opts.Columns > 4096 {
		return StudyInfo{}, fmt.Errorf("dicomgen: image %dx%d, want 1..4096 each way", opts.Rows, opts.Columns)
	}
	if opts.PatientName == "" {
		opts.PatientName = DefaultPatientName
	}
	if opts.PatientID == "" {
		opts.PatientID = DefaultPatientID
	}
	if opts.StudyDescription == "" {
		opts.StudyDescription = "orthanc-gcp-broker synthetic study"
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	when := now().UTC()

	info := StudyInfo{PatientName: opts.PatientName, PatientID: opts.PatientID}
	var err error
	if info.StudyUID, err = NewUID(); err != nil {
		return StudyInfo{}, err
	}
	if info.SeriesUID, err = NewUID(); err != nil {
		return StudyInfo{}, err
	}
	for k := 1; k <= opts.Instances; k++ {
		sop, err := NewUID()
		if err != nil {
			return StudyInfo{}, err
		}
		file, err := instance(opts, info, sop, k, when)
		if err != nil {
			return StudyInfo{}, fmt.Errorf("dicomgen: instance %d: %w", k, err)
		}
		info.SOPInstanceUIDs = append(info.SOPInstanceUIDs, sop)
		info.Files = append(info.Files, file)
	}
	return info, nil
}

// NewUID returns a fresh DICOM UID of the form 2.25.<128-bit random number>
// (PS3.5 B.2: UUID-derived UIDs need no registered root).
func NewUID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("dicomgen: random UID: %w", err)
	}
	// Mark it as a version 4 UUID, as B.2 expects.
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return "2.25." + new(big.Int).SetBytes(b).String(), nil
}

// instance encodes the k-th image (1-based) of the series.
func instance(opts Options, info StudyInfo, sopUID string, k int, when time.Time) ([]byte, error) {
	rows, cols := opts.Rows, opts.Columns
	nf := frame.NewNativeFrame[uint8](8, rows, cols, rows*cols, 1)
	// A diagonal gradient shifted per instance, so every image differs.
	for y := 0; y < rows; y++ {
		for x := 0; x < cols; x++ {
			nf.RawData[y*cols+x] = uint8((x + y + 16*k) % 256)
		}
	}
	pixels := dicom.PixelDataInfo{Frames: []*frame.Frame{{NativeData: nf}}}

	date, tod := when.Format("20060102"), when.Format("150405")
	type item struct {
		t tag.Tag
		v any
	}
	items := []item{
		{tag.FileMetaInformationVersion, []byte{0, 1}},
		{tag.MediaStorageSOPClassUID, []string{SecondaryCaptureSOPClassUID}},
		{tag.MediaStorageSOPInstanceUID, []string{sopUID}},
		{tag.TransferSyntaxUID, []string{uid.ExplicitVRLittleEndian}},
		{tag.ImplementationClassUID, []string{implementationClassUID}},
		{tag.ImplementationVersionName, []string{implementationVersionName}},
		{tag.SpecificCharacterSet, []string{"ISO_IR 100"}},
		{tag.ImageType, []string{"DERIVED", "SECONDARY"}},
		{tag.SOPClassUID, []string{SecondaryCaptureSOPClassUID}},
		{tag.SOPInstanceUID, []string{sopUID}},
		{tag.StudyDate, []string{date}},
		{tag.SeriesDate, []string{date}},
		{tag.ContentDate, []string{date}},
		{tag.StudyTime, []string{tod}},
		{tag.AccessionNumber, []string{""}},
		{tag.Modality, []string{"OT"}},
		{tag.ConversionType, []string{"WSD"}},
		{tag.ReferringPhysicianName, []string{""}},
		{tag.StudyDescription, []string{opts.StudyDescription}},
		{tag.SeriesDescription, []string{"synthetic gradient"}},
		{tag.PatientName, []string{info.PatientName}},
		{tag.PatientID, []string{info.PatientID}},
		{tag.PatientBirthDate, []string{""}},
		{tag.PatientSex, []string{"O"}},
		{tag.StudyInstanceUID, []string{info.StudyUID}},
		{tag.SeriesInstanceUID, []string{info.SeriesUID}},
		{tag.StudyID, []string{"1"}},
		{tag.SeriesNumber, []string{"1"}},
		{tag.InstanceNumber, []string{strconv.Itoa(k)}},
		{tag.PatientOrientation, []string{""}},
		{tag.SamplesPerPixel, []int{1}},
		{tag.PhotometricInterpretation, []string{"MONOCHROME2"}},
		{tag.Rows, []int{rows}},
		{tag.Columns, []int{cols}},
		{tag.BitsAllocated, []int{8}},
		{tag.BitsStored, []int{8}},
		{tag.HighBit, []int{7}},
		{tag.PixelRepresentation, []int{0}},
		{tag.PixelData, pixels},
	}
	ds := dicom.Dataset{Elements: make([]*dicom.Element, 0, len(items))}
	for _, it := range items {
		e, err := dicom.NewElement(it.t, it.v)
		if err != nil {
			return nil, fmt.Errorf("element %v: %w", it.t, err)
		}
		if it.t == tag.PixelData {
			e.RawValueRepresentation = "OB" // 8-bit samples: OB, not the library's default OW
		}
		ds.Elements = append(ds.Elements, e)
	}
	// Part 5 wants ascending tag order; the writer keeps the given order.
	sort.SliceStable(ds.Elements, func(a, b int) bool {
		ta, tb := ds.Elements[a].Tag, ds.Elements[b].Tag
		if ta.Group != tb.Group {
			return ta.Group < tb.Group
		}
		return ta.Element < tb.Element
	})
	var buf bytes.Buffer
	if err := dicom.Write(&buf, ds); err != nil {
		return nil, err
	}
	if buf.Len() < 132 || string(buf.Bytes()[128:132]) != "DICM" {
		return nil, errors.New("writer produced no Part-10 preamble")
	}
	return buf.Bytes(), nil
}
