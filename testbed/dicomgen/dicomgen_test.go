package dicomgen

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"
	"github.com/suyashkumar/dicom/pkg/uid"
)

var uidForm = regexp.MustCompile(`^2\.25\.(0|[1-9][0-9]*)$`)

func TestNewUID(t *testing.T) {
	seen := map[string]bool{}
	for k := 0; k < 200; k++ {
		u, err := NewUID()
		if err != nil {
			t.Fatal(err)
		}
		if !uidForm.MatchString(u) || len(u) > 64 {
			t.Fatalf("UID %q is not a valid 2.25 UID of at most 64 chars", u)
		}
		if seen[u] {
			t.Fatalf("UID %q repeated", u)
		}
		seen[u] = true
	}
}

func TestGenerateOptions(t *testing.T) {
	fixed := time.Date(2024, 2, 29, 13, 14, 15, 0, time.UTC)
	tests := []struct {
		name                   string
		opts                   Options
		wantN, wantRows, wantC int
		wantPatient, wantID    string
		wantErr                bool
	}{
		{name: "defaults", opts: Options{}, wantN: 1, wantRows: 64, wantC: 64, wantPatient: "DEMO^PATIENT", wantID: "DEMO-0001"},
		{name: "custom", opts: Options{Instances: 3, Rows: 16, Columns: 8, PatientName: "TEST^OTHER", PatientID: "X1"},
			wantN: 3, wantRows: 16, wantC: 8, wantPatient: "TEST^OTHER", wantID: "X1"},
		{name: "negative count", opts: Options{Instances: -1}, wantErr: true},
		{name: "too many", opts: Options{Instances: MaxInstances + 1}, wantErr: true},
		{name: "bad size", opts: Options{Rows: -3}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Now = func() time.Time { return fixed }
			info, err := Generate(tc.opts)
			if tc.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(info.Files) != tc.wantN || len(info.SOPInstanceUIDs) != tc.wantN {
				t.Fatalf("%d files, %d SOP UIDs; want %d", len(info.Files), len(info.SOPInstanceUIDs), tc.wantN)
			}
			for k, f := range info.Files {
				ds := parse(t, f)
				want := map[tag.Tag]string{
					tag.TransferSyntaxUID:          uid.ExplicitVRLittleEndian,
					tag.MediaStorageSOPClassUID:    SecondaryCaptureSOPClassUID,
					tag.MediaStorageSOPInstanceUID: info.SOPInstanceUIDs[k],
					tag.SOPClassUID:                SecondaryCaptureSOPClassUID,
					tag.SOPInstanceUID:             info.SOPInstanceUIDs[k],
					tag.StudyInstanceUID:           info.StudyUID,
					tag.SeriesInstanceUID:          info.SeriesUID,
					tag.PatientName:                tc.wantPatient,
					tag.PatientID:                  tc.wantID,
					tag.InstanceNumber:             fmt.Sprint(k + 1),
					tag.PhotometricInterpretation:  "MONOCHROME2",
					tag.StudyDate:                  "20240229",
					tag.StudyTime:                  "131415",
				}
				for tg, v := range want {
					if got := str(t, ds, tg); got != v {
						t.Errorf("file %d %s = %q, want %q", k, tag.DebugString(tg), got, v)
					}
				}
				wantInts := map[tag.Tag]int{tag.Rows: tc.wantRows, tag.Columns: tc.wantC,
					tag.BitsAllocated: 8, tag.BitsStored: 8, tag.HighBit: 7, tag.SamplesPerPixel: 1, tag.PixelRepresentation: 0}
				for tg, v := range wantInts {
					if got := integer(t, ds, tg); got != v {
						t.Errorf("file %d %s = %d, want %d", k, tag.DebugString(tg), got, v)
					}
				}
				pixels := pixelBytes(t, ds)
				if len(pixels) != tc.wantRows*tc.wantC {
					t.Fatalf("file %d: %d pixels, want %d", k, len(pixels), tc.wantRows*tc.wantC)
				}
				// The gradient: pixel (x,y) of instance k+1 is x+y+16(k+1) mod 256.
				x, y := tc.wantC-1, tc.wantRows-1
				if got, want := pixels[y*tc.wantC+x], uint8((x+y+16*(k+1))%256); got != want {
					t.Errorf("file %d pixel (%d,%d) = %d, want %d", k, x, y, got, want)
				}
			}
			if tc.wantN > 1 && bytes.Equal(pixelBytes(t, parse(t, info.Files[0])), pixelBytes(t, parse(t, info.Files[1]))) {
				t.Errorf("instances 1 and 2 have identical pixels")
			}
		})
	}
}

func TestStudyUIDsAreFresh(t *testing.T) {
	a, err := Study(3)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Study(3)
	if err != nil {
		t.Fatal(err)
	}
	all := append([]string{a.StudyUID, a.SeriesUID, b.StudyUID, b.SeriesUID}, append(a.SOPInstanceUIDs, b.SOPInstanceUIDs...)...)
	seen := map[string]bool{}
	for _, u := range all {
		if !uidForm.MatchString(u) {
			t.Errorf("UID %q malformed", u)
		}
		if seen[u] {
			t.Errorf("UID %q used twice", u)
		}
		seen[u] = true
	}
}

// dcmtk, an independent DICOM implementation, must read the files cleanly.
func TestDcmtkParses(t *testing.T) {
	dcmdump, err := exec.LookPath("dcmdump")
	if err != nil {
		t.Fatalf("dcmdump not found (%v); run: apt-get install -y dcmtk", err)
	}
	info, err := Study(2)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "instance1.dcm")
	if err := os.WriteFile(path, info.Files[0], 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(dcmdump, "--log-level", "warn", path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dcmdump: %v\n%s", err, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("dcmdump warnings or errors:\n%s", stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"# Used TransferSyntax: Little Endian Explicit",
		"(0010,0010) PN [DEMO^PATIENT]",
		"(0020,000d) UI [" + info.StudyUID + "]",
		"(0028,0004) CS [MONOCHROME2]",
		"(0028,0010) US 64",
		"(0028,0011) US 64",
		"(0028,0100) US 8",
		"(7fe0,0010) OB",
		"# 4096, 1 PixelData",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dcmdump output lacks %q", want)
		}
	}
	// dcmftest checks the Part-10 preamble and meta header.
	if ft, err := exec.Command("dcmftest", path).CombinedOutput(); err != nil || !strings.HasPrefix(string(ft), "yes:") {
		t.Errorf("dcmftest: %v %s", err, ft)
	}
}

// A real Orthanc accepts the files as one study of N instances, and its
// DICOMweb plugin and renderer see them.
func TestOrthancAcceptsStudy(t *testing.T) {
	const n = 4
	inst := orthancproc.StartForTest(t, orthancproc.Options{Name: "dicomgen", Users: map[string]string{"test": "pw"}})
	info, err := Study(n)
	if err != nil {
		t.Fatal(err)
	}
	var orthancIDs []string
	for k, f := range info.Files {
		var res struct{ ID, Status, ParentStudy string }
		if err := inst.Do(http.MethodPost, "/instances", f, &res); err != nil {
			t.Fatalf("POST /instances file %d: %v", k, err)
		}
		if res.Status != "Success" {
			t.Fatalf("file %d: Status %q, want Success", k, res.Status)
		}
		orthancIDs = append(orthancIDs, res.ID)
	}

	var studies []struct {
		ID            string
		Series        []string
		MainDicomTags struct {
			StudyInstanceUID, StudyDescription string
		}
		PatientMainDicomTags struct{ PatientName, PatientID string }
	}
	if err := inst.Do(http.MethodGet, "/studies?expand", nil, &studies); err != nil {
		t.Fatal(err)
	}
	if len(studies) != 1 {
		t.Fatalf("%d studies, want 1", len(studies))
	}
	st := studies[0]
	if st.MainDicomTags.StudyInstanceUID != info.StudyUID || len(st.Series) != 1 ||
		st.PatientMainDicomTags.PatientName != "DEMO^PATIENT" || st.PatientMainDicomTags.PatientID != DefaultPatientID {
		t.Errorf("study = %+v, want UID %s, 1 series, DEMO^PATIENT", st, info.StudyUID)
	}
	var instances []struct{ ID string }
	if err := inst.Do(http.MethodGet, "/studies/"+st.ID+"/instances", nil, &instances); err != nil {
		t.Fatal(err)
	}
	if len(instances) != n {
		t.Errorf("study has %d instances, want %d", len(instances), n)
	}

	// QIDO-RS through the DICOMweb plugin.
	var qido []map[string]struct{ Value []any }
	if err := inst.Do(http.MethodGet, "/dicom-web/studies?StudyInstanceUID="+info.StudyUID+"&includefield=00201208", nil, &qido); err != nil {
		t.Fatal(err)
	}
	if len(qido) != 1 || fmt.Sprint(qido[0]["00201208"].Value) != fmt.Sprintf("[%d]", n) {
		t.Errorf("QIDO = %v, want 1 study with NumberOfStudyRelatedInstances %d", qido, n)
	}

	// Orthanc decodes the pixels: a raw frame has rows*cols bytes, and the
	// preview renders as PNG.
	var raw []byte
	if err := inst.Do(http.MethodGet, "/instances/"+orthancIDs[0]+"/frames/0/raw", nil, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) != 64*64 || raw[0] != 16 || raw[64*64-1] != uint8((63+63+16)%256) {
		t.Errorf("raw frame: %d bytes, first %d; want 4096 bytes of the gradient", len(raw), raw[0])
	}
	var png []byte
	if err := inst.Do(http.MethodGet, "/instances/"+orthancIDs[0]+"/preview", nil, &png); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("preview is not a PNG (%d bytes)", len(png))
	}
}

func parse(t *testing.T, file []byte) dicom.Dataset {
	t.Helper()
	ds, err := dicom.Parse(bytes.NewReader(file), int64(len(file)), nil)
	if err != nil {
		t.Fatalf("parse generated file: %v", err)
	}
	return ds
}

func str(t *testing.T, ds dicom.Dataset, tg tag.Tag) string {
	t.Helper()
	e, err := ds.FindElementByTag(tg)
	if err != nil {
		t.Fatalf("%s: %v", tag.DebugString(tg), err)
	}
	s, ok := e.Value.GetValue().([]string)
	if !ok || len(s) == 0 {
		t.Fatalf("%s is not a string value: %v", tag.DebugString(tg), e.Value)
	}
	return strings.Join(s, `\`)
}

func integer(t *testing.T, ds dicom.Dataset, tg tag.Tag) int {
	t.Helper()
	e, err := ds.FindElementByTag(tg)
	if err != nil {
		t.Fatalf("%s: %v", tag.DebugString(tg), err)
	}
	v, ok := e.Value.GetValue().([]int)
	if !ok || len(v) != 1 {
		t.Fatalf("%s is not one int: %v", tag.DebugString(tg), e.Value)
	}
	return v[0]
}

func pixelBytes(t *testing.T, ds dicom.Dataset) []uint8 {
	t.Helper()
	e, err := ds.FindElementByTag(tag.PixelData)
	if err != nil {
		t.Fatal(err)
	}
	pd := dicom.MustGetPixelDataInfo(e.Value)
	if len(pd.Frames) != 1 {
		t.Fatalf("%d frames, want 1", len(pd.Frames))
	}
	nf, err := pd.Frames[0].GetNativeFrame()
	if err != nil {
		t.Fatal(err)
	}
	raw, ok := nf.RawDataSlice().([]uint8)
	if !ok {
		t.Fatalf("pixel data is %T, want []uint8", nf.RawDataSlice())
	}
	return raw
}
