package impression

import "fmt"

// Fields are the impression's fields as its JSON lines name them (CONTRACT §1), in
// order: the one table the parser matches keys against and NDJSON and CSV records
// follow (every field but tenant: encode.Columns). The constants below index it.
var Fields = []string{"tenant", "environmentId", "environmentName", "key", "bucketingKey", "split",
	"treatment", "label", "time", "splitVersionNumber", "machineName", "machineIp", "sdk", "sdkVersion",
	"properties"}

// Indexes into Fields; TestParseFieldIndexes keeps them and fastField in step with it.
const (
	fTenant = iota
	fEnvironmentID
	fEnvironmentName
	fKey
	fBucketingKey
	fSplit
	fTreatment
	fLabel
	fTime
	fSplitVersionNumber
	fMachineName
	fMachineIP
	fSDK
	fSDKVersion
	fProperties
	numFields
)

// Value is imp's value of Fields[f]: a string, or an integer (isInt) for time and
// splitVersionNumber.
func (imp *Impression) Value(f int) (str string, n int64, isInt bool) {
	switch f {
	case fTenant:
		return imp.Tenant, 0, false
	case fEnvironmentID:
		return imp.EnvironmentID, 0, false
	case fEnvironmentName:
		return imp.EnvironmentName, 0, false
	case fKey:
		return imp.Key, 0, false
	case fBucketingKey:
		return imp.BucketingKey, 0, false
	case fSplit:
		return imp.Split, 0, false
	case fTreatment:
		return imp.Treatment, 0, false
	case fLabel:
		return imp.Label, 0, false
	case fTime:
		return "", imp.Time, true
	case fSplitVersionNumber:
		return "", imp.SplitVersionNumber, true
	case fMachineName:
		return imp.MachineName, 0, false
	case fMachineIP:
		return imp.MachineIP, 0, false
	case fSDK:
		return imp.SDK, 0, false
	case fSDKVersion:
		return imp.SDKVersion, 0, false
	case fProperties:
		return imp.Properties, 0, false
	}
	panic(fmt.Sprintf("impression: no field %d", f))
}
