// Shaped like CDKTF's generated source for a resource "google_widget".
import { Construct } from 'constructs';
import * as cdktf from 'cdktf';

export interface WidgetConfig extends cdktf.TerraformMetaArguments {
  /**
  * Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs/resources/widget#name Widget#name}
  */
  readonly name: string;
  /**
  * Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs/resources/widget#labels Widget#labels}
  */
  readonly labels?: { [key: string]: string };
  /**
  * Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs/resources/widget#tags Widget#tags}
  */
  readonly tags?: string[];
  /**
  * Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs/resources/widget#enabled Widget#enabled}
  */
  readonly enabled?: boolean | cdktf.IResolvable;
  /**
  * build block
  *
  * Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs/resources/widget#build Widget#build}
  */
  readonly buildAttribute: WidgetBuild;
  /**
  * port block
  *
  * Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs/resources/widget#port Widget#port}
  */
  readonly port?: WidgetPort[] | cdktf.IResolvable;
}
export interface WidgetStatus {
}

export function widgetStatusToHclTerraform(struct?: WidgetStatus): any {
  if (!cdktf.canInspect(struct) || cdktf.Tokenization.isResolvable(struct)) { return struct; }
  const attrs = {
  };
  return attrs;
}

export class WidgetStatusOutputReference extends cdktf.ComplexObject {
  // code - computed: true, optional: false, required: false
  public get code() {
    return this.getNumberAttribute('code');
  }

  // zones - computed: true, optional: false, required: false
  public get zones() {
    return cdktf.Fn.tolist(this.getListAttribute('zones'));
  }
}

export class WidgetStatusList extends cdktf.ComplexList {
  public get(index: number): WidgetStatusOutputReference {
    return new WidgetStatusOutputReference(this.terraformResource, this.terraformAttribute, index, this.wrapsSet);
  }
}
export interface WidgetBuild {
  /**
  * Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs/resources/widget#image Widget#image}
  */
  readonly image: string;
}

export function widgetBuildToHclTerraform(struct?: WidgetBuildOutputReference | WidgetBuild): any {
  const attrs = {
    image: {
      value: cdktf.stringToHclTerraform(struct!.image),
      isBlock: false,
      type: "simple",
      storageClassType: "string",
    },
  };
  return attrs;
}

export class WidgetBuildOutputReference extends cdktf.ComplexObject {
  // image - computed: false, optional: false, required: true
  private _image?: string; 
  public get image() {
    return this.getStringAttribute('image');
  }
}
export interface WidgetPort {
  /**
  * Docs at Terraform Registry: {@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs/resources/widget#number Widget#number}
  */
  readonly number?: number;
}

export function widgetPortToHclTerraform(struct?: WidgetPort | cdktf.IResolvable): any {
  const attrs = {
    number: {
      value: cdktf.numberToHclTerraform(struct!.number),
      isBlock: false,
      type: "simple",
      storageClassType: "number",
    },
  };
  return attrs;
}

export class WidgetPortOutputReference extends cdktf.ComplexObject {
  // number - computed: true, optional: true, required: false
  private _number?: number; 
  public get number() {
    return this.getNumberAttribute('number');
  }
}

export class WidgetPortList extends cdktf.ComplexList {
}

/**
* Represents a {@link https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs/resources/widget google_widget}
*/
export class Widget extends cdktf.TerraformResource {

  // =================
  // STATIC PROPERTIES
  // =================
  public static readonly tfResourceType = "google_widget";

  // ==========
  // ATTRIBUTES
  // ==========

  // name - computed: false, optional: false, required: true
  private _name?: string; 
  public get name() {
    return this.getStringAttribute('name');
  }

  // labels - computed: false, optional: true, required: false
  private _labels?: { [key: string]: string }; 
  public get labels() {
    return this.getStringMapAttribute('labels');
  }

  // effective_labels - computed: true, optional: false, required: false
  private _effectiveLabels = new cdktf.StringMap(this, "effective_labels");
  public get effectiveLabels() {
    return this._effectiveLabels;
  }

  // tags - computed: false, optional: true, required: false
  private _tags?: string[]; 
  public get tags() {
    return cdktf.Fn.tolist(this.getListAttribute('tags'));
  }

  // enabled - computed: true, optional: true, required: false
  private _enabled?: boolean | cdktf.IResolvable; 
  public get enabled() {
    return this.getBooleanAttribute('enabled');
  }

  // uri - computed: true, optional: false, required: false
  public get uri() {
    return this.getStringAttribute('uri');
  }

  // status - computed: true, optional: false, required: false
  private _status = new WidgetStatusList(this, "status", false);
  public get status() {
    return this._status;
  }

  // build - computed: false, optional: false, required: true
  private _build = new WidgetBuildOutputReference(this, "build");
  public get build() {
    return this._build;
  }

  // port - computed: false, optional: true, required: false
  private _port = new WidgetPortList(this, "port", true);
  public get port() {
    return this._port;
  }

  protected synthesizeHclAttributes(): { [name: string]: any } {
    const attrs = {
      name: {
        value: cdktf.stringToHclTerraform(this._name),
        isBlock: false,
        type: "simple",
        storageClassType: "string",
      },
      labels: {
        value: cdktf.hashMapperHcl(cdktf.stringToHclTerraform)(this._labels),
        isBlock: false,
        type: "map",
        storageClassType: "stringMap",
      },
      tags: {
        value: cdktf.listMapperHcl(cdktf.stringToHclTerraform, false)(this._tags),
        isBlock: false,
        type: "set",
        storageClassType: "stringList",
      },
      enabled: {
        value: cdktf.booleanToHclTerraform(this._enabled),
        isBlock: false,
        type: "simple",
        storageClassType: "boolean",
      },
      build: {
        value: widgetBuildToHclTerraform(this._build.internalValue),
        isBlock: true,
        type: "list",
        storageClassType: "WidgetBuildList",
      },
      port: {
        value: cdktf.listMapperHcl(widgetPortToHclTerraform, true)(this._port.internalValue),
        isBlock: true,
        type: "set",
        storageClassType: "WidgetPortList",
      },
    };
    return attrs;
  }
}
